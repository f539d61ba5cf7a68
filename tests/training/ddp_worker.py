"""Worker launched by ``torchrun`` from test_ddp.py: trains the tiny task and saves each rank's weights.

Usage: ``python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py OUT_DIR STEPS BATCH``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_training_task import TinyRegression, ddp_parity_settings, tiny_dataset  # noqa: E402

from magphase.training import fit, shutdown_distributed


def main() -> None:
    out_dir, steps, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    dataset = tiny_dataset()
    settings = ddp_parity_settings(steps, batch)
    rank = int(os.environ["RANK"])
    # Two fits in one process group: the second reuses the group (as `magphase run` does across stages).
    for variant, weights in (("uniform", None), ("weighted", np.linspace(1.0, 3.0, len(dataset)))):
        result = fit(TinyRegression(), dataset, settings, out_dir / variant, sample_weights=weights)
        state = {f"model.{k}": v for k, v in result.model.state_dict().items()}
        state |= {f"ema.{k}": v for k, v in result.ema_model.state_dict().items()}
        torch.save(state, out_dir / f"{variant}_rank{rank}.pt")
    shutdown_distributed()


if __name__ == "__main__":
    main()
