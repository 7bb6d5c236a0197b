"""``segdecay demo``: one small training run on the embedded synthetic data.

Shows the whole product on a laptop CPU in a couple of minutes: the decay split, the
per-epoch log, the per-class IoU table and a run folder with its report.
"""

from __future__ import annotations

from pathlib import Path

from segdecay.config import TrainConfig
from segdecay.engine import Log, train

# 40 epochs of 6 AdamW steps on 24 images of 64x64: about 40 s on two CPU cores.
# lambda = 1 gives tau = 1/(lr*lambda) = 500 steps, about twice the run: decay bites.
DEMO_CONFIG = TrainConfig(data="synthetic", epochs=40, batch_size=4, lr=2e-3, weight_decay=1.0)


def run_demo(out: Path, quiet: bool = False) -> dict:
    """Train the demo model into ``out`` (a fresh folder each time: ``out`` is replaced)."""
    import shutil

    if (out / "last.pt").exists() and (out / "summary.json").exists():
        shutil.rmtree(out)
    summary = train(DEMO_CONFIG, out, log=Log(quiet=quiet))
    if not quiet:
        print(f"demo done: val mIoU {summary['final_val_miou']:.3f} "
              f"(train mIoU {summary['final_train_miou']:.3f}); open {out / 'report.html'}")
    return summary
