"""The loss curve of a training run, drawn from the Trainer's log history."""

from __future__ import annotations

from pathlib import Path


def loss_points(log_history: list[dict]) -> tuple[list[int], list[float]]:
    """``(steps, losses)`` of the training-loss entries in a Trainer log history."""
    steps, losses = [], []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            steps.append(int(entry["step"]))
            losses.append(float(entry["loss"]))
    return steps, losses


def plot_loss(log_history: list[dict], path: str | Path, title: str = "training loss") -> Path | None:
    """Write the loss curve as a PNG at ``path``; None when the history holds no loss."""
    steps, losses = loss_points(log_history)
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, marker="o" if len(steps) < 40 else None, linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
