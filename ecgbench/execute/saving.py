"""How a task's unfinished work is saved in the store and continued: one `Checkpoints` per long piece of work."""
from __future__ import annotations

from pathlib import Path

from ecgbench import log
from ecgbench.engine.progress import Checkpoints, Deadline
from ecgbench.execute.context import Context
from ecgbench.store.layout import read_state, save_state

__all__ = ["checkpoints"]


def checkpoints(w: Context, final: Path, what: str) -> Checkpoints:
    """Save the state of the work that will become the entry `final` in the two slots beside it, as often as
    the run asks (`--checkpoint-every`), and stop it at the run's deadline (`--time-limit`); `what` names it
    in the line that says a saved state is continued."""
    def load() -> dict | None:
        state = read_state(final)
        if state is not None:
            log.info(f"continuing {what} from its saved state ({_where(state)})")
        return state

    return Checkpoints(load=load, save=lambda state: save_state(final, state), seconds=w.cfg.checkpoint_seconds,
                       deadline=Deadline.of(w.cfg.deadline))


def _where(state: dict) -> str:
    if "packed" in state:
        return f"{state['packed']} members, epoch {state['run']['epoch'] + 1}"
    if "fold_state" in state:
        f = state["fold_state"]
        return f"fold {state['fold'] + 1}, epoch {f['epoch'] + 1}" + (f", batch {f['pos'] + 1}" if f["pos"] else "")
    return f"{len(state['adv'])} beats done"
