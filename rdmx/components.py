"""Building one registered component with the checks every caller wants (the engine, ``rdmx
reference build``, ``--dry-run``, the contract check): whatever goes wrong names the component
by its recipe label and its plugin.

* a factory that raises anything, or returns None, or returns the wrong kind of object, is a
  :class:`PluginError` naming the recipe path and label, the registered name and the plugin;
* an encoder's registered ``dim`` / ``resolution`` (numbers or functions of the config) must
  match the built encoder's spec;
* built encoders carry ``rdmx_label`` / ``rdmx_origin`` so later errors (feature shapes,
  non-finite features or gradients) name them the same way (:func:`describe_encoder`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rdmx.errors import PluginError, RdmxError
from rdmx.registry import Entry


def describe(entry: Entry, label: str | None = None, path: str | None = None) -> str:
    """``battery.encoders[1] 'conv-b' (encoder 'toy-conv', plugin builtin.toys)``."""
    head = " ".join(x for x in (path, f"'{label}'" if label and label != entry.name else None) if x)
    body = f"{entry.kind[:-1]} '{entry.name}', plugin {entry.plugin}"
    return f"{head} ({body})" if head else body


def describe_encoder(label: str, encoder: Any) -> str:
    """How messages name a built encoder: ``encoder 'conv-a' (toy-conv, plugin builtin.toys)``."""
    origin = getattr(encoder, "rdmx_origin", None)
    if origin:
        name, _, plugin = origin.partition(", ")
        return f"encoder '{label}' ({plugin if name == label else origin})"
    spec = getattr(encoder, "spec", None)
    return f"encoder '{label}'" + (f" ({spec.name}, fingerprint {spec.fingerprint()})" if spec is not None else "")


def _rewrap(exc: RdmxError, message: str) -> RdmxError:
    """The same error class with a prefixed message (RdmxError when the class will not take one)."""
    try:
        return type(exc)(message)
    except TypeError:
        return RdmxError(message)


def encoder_registration_problems(entry: Entry, config: BaseModel, encoder: Any) -> list[str]:
    """Where the built encoder's spec contradicts what its plugin registered."""
    problems = []
    spec = encoder.spec
    for key in ("dim", "resolution"):
        try:
            declared = entry.declared(key, config)
        except Exception as exc:  # noqa: BLE001 - a broken metadata function is the plugin's bug
            problems.append(f"its registered {key} (a function of the config) raised {type(exc).__name__}: {exc}")
            continue
        built = getattr(spec, key)
        if declared is not None and declared != built:
            problems.append(f"registered {key}={declared!r} but the built encoder's spec says {key}={built!r} "
                            f"(fix the register() call, or declare {key} as a function of the config)")
    family = entry.meta_value("family")
    if family and family != spec.family:  # one fact, declared in two places: they must agree
        problems.append(f"registered family={family!r} but its EncoderSpec says family={spec.family!r} (declare it "
                        "once: register(family=...) and EncoderSpec(family=...) must be the same)")
    return problems


def build_checked(entry: Entry, config: BaseModel | dict | None, *args: Any, label: str | None = None,
                  path: str | None = None, where: str = "") -> Any:
    """``entry.build(config, *args)`` with every failure naming the component (see module doc)."""
    who = describe(entry, label, path)
    prefix = f"{where}: " if where else ""
    cfg = entry.validate_config(config)
    from rdmx.trust import check

    check(cfg, f"{prefix}{path or entry.name}")
    try:
        obj = entry.build(cfg, *args)
    except RdmxError as exc:
        raise _rewrap(exc, f"{prefix}{who}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any plugin fault becomes one message naming it
        raise PluginError(f"{prefix}{who}: building it failed: {type(exc).__name__}: {exc}") from exc
    if obj is None:
        raise PluginError(f"{prefix}{who}: its factory {entry.factory!r} returned None instead of the "
                          f"{entry.kind[:-1]}")
    if entry.kind in ("encoders", "generators"):
        _check_type(entry, obj, f"{prefix}{who}")
    if entry.kind == "encoders":
        problems = encoder_registration_problems(entry, cfg, obj)
        if problems:
            raise PluginError(f"{prefix}{who}: " + "; ".join(problems))
        obj.rdmx_label = label or entry.name
        obj.rdmx_origin = f"{entry.name}, plugin {entry.plugin}"
        obj.rdmx_contract_skip = tuple(entry.meta_value("contract_skip") or ())
    return obj


def _check_type(entry: Entry, obj: Any, who: str) -> None:
    import torch

    if entry.kind == "encoders":
        from rdmx.represent.encoder import Encoder

        meta = entry.meta
        modality = meta.get("modality") if hasattr(meta, "get") else getattr(meta, "modality", None)
        if modality == "text":  # a text tower (joint.text_encoder): a frozen module, texts -> (B, dim)
            if not isinstance(obj, torch.nn.Module) or getattr(obj, "spec", None) is None:
                raise PluginError(f"{who}: its factory returned {type(obj).__name__}, not a torch.nn.Module text "
                                  f"encoder with a .spec (rdmx.represent.encoder.EncoderSpec)")
        elif not isinstance(obj, Encoder):
            raise PluginError(f"{who}: its factory returned {type(obj).__name__}, not an "
                              f"rdmx.represent.encoder.Encoder")
    elif not isinstance(obj, torch.nn.Module):
        raise PluginError(f"{who}: its factory returned {type(obj).__name__}, not a torch.nn.Module generator")
