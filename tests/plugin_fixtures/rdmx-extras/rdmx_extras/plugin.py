"""A well-behaved plugin using the command and tracker hooks."""

from pydantic import Field

from rdmx import ComponentConfig, hookimpl


class JsonlConfig(ComponentConfig):
    path: str = Field(description="file the metrics are appended to, one JSON object per line")


@hookimpl
def rdmx_register_trackers(register):
    register("jsonl", "rdmx_extras.tracker:JsonlTracker", config=JsonlConfig,
             description="metrics as JSON lines in a file")


@hookimpl
def rdmx_register_commands(cli):
    @cli.command("hello")
    def hello(name: str = "world") -> None:
        """Say hello (a plugin command)."""
        print(f"hello {name} from rdmx-extras")
