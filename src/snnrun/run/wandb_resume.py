"""``snnrun resume=wandb:<entity>/<project>/<run id>``: continue a run from its W&B artifact.

The run's latest checkpoint artifact (``model-<run id>:latest``, logged by ``logger=wandb``
when each training segment ends, or each epoch with ``logger.checkpoints=all``) is downloaded
into a new run dir, which is laid out as the original (``run.json``, ``config.yaml``,
``metrics.jsonl``, the W&B id); the resume then continues the same W&B run. Needs W&B online
(an API key); the files come from W&B's servers.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from snnrun.core.errors import SnnrunError, one_line
from snnrun.run.checkpoint import load_checkpoint
from snnrun.run.rundir import LATEST, RunDir

PREFIX = "wandb:"


def parse_spec(spec: str) -> tuple[str, str, str]:
    parts = spec[len(PREFIX) :].strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise SnnrunError(
            f"resume={spec}: write resume=wandb:<entity>/<project>/<run id> (the run's page "
            "shows all three)"
        )
    return parts[0], parts[1], parts[2]


def fetch_run(spec: str, run_dir: Path) -> Path:
    """Download the latest checkpoint of the W&B run ``spec`` into the new ``run_dir``."""
    import wandb

    entity, project, run_id = parse_spec(spec)
    rundir = RunDir(run_dir)
    if rundir.has_files():
        raise SnnrunError(f"{run_dir} already holds a run; pick another hydra.run.dir")
    name = f"{entity}/{project}/model-{run_id}:latest"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(wandb.Api().artifact(name, type="model").download(root=tmp))
        except Exception as e:  # network, auth and missing-artifact errors come in many types
            reason = one_line(e, 200)
            raise SnnrunError(
                f"could not fetch {name} from W&B ({reason}); check the run path, `wandb login`, "
                "and that the run was trained with logger=wandb"
            ) from None
        payload = load_checkpoint(folder / "checkpoint.pt")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / "checkpoint.pt", run_dir / LATEST)
    rundir.write_info({"run_id": payload["run_id"], "data": payload["data"], "from": spec})
    rundir.write_config(payload["config"])
    rundir.rewrite_metrics(payload["state"]["history"])
    rundir.write_wandb_id(run_id)
    return run_dir
