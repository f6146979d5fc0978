"""``rdmx`` with one fault injected, for tests/test_cluster.py: ``python tests/fault_worker.py FAULT
rdmx-args...`` where FAULT is

* ``term@K``: this process sends itself SIGTERM during step K (0-based);
* ``double@K``: SIGTERM during step K, then a second SIGTERM while the stop's checkpoint is
  being written (the process must die at once, the previous checkpoint untouched);
* ``kill9@K``: SIGKILL in the middle of the asynchronous save of the checkpoint of step K
  (its shards written, its manifest not yet).
"""

import os
import signal
import sys
import time

from rdmx.train.checkpointer import Checkpointer
from rdmx.train.loop import Trainer

fault, at = sys.argv[1].split("@")
at = int(at)

original_step = Trainer.train_step
original_seal = Checkpointer._seal


def train_step(self, step):
    if fault in ("term", "double") and step == at:
        os.kill(os.getpid(), signal.SIGTERM)
    return original_step(self, step)


def seal(self, futures, folder, step, *args):
    if fault == "double" and step == at + 1:
        for future in futures:
            future.result()
        time.sleep(1.2)  # after the window in which the same signal counts once (rdmx.train.stop.REPEAT_S)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread, which waits for this save
        time.sleep(30)
    if fault == "kill9" and step == at:
        for future in futures:
            future.result()
        os.kill(os.getpid(), signal.SIGKILL)
    return original_seal(self, futures, folder, step, *args)


Trainer.train_step = train_step
Checkpointer._seal = seal

from rdmx.cli import main  # noqa: E402

main(sys.argv[2:])
