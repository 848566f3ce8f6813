"""Draws media/architecture.png, the stack's architecture diagram: python media/make_architecture.py."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("architecture.png")

BOXES = {
    # name: (x, y, w, h, colour, label)
    "client": (0.2, 4.3, 2.0, 1.0, "#eeeeee", "Clients\ncurl / Postman"),
    "etl": (3.0, 5.6, 2.8, 1.2, "#cfe2f3",
            "etl-flask-scheduler\nNginx :5554 → Gunicorn\nAPScheduler (1 worker)"),
    "serving": (3.0, 3.3, 2.8, 1.2, "#d9ead3", "serving-flask\nNginx :80 → Gunicorn\nchampion model per worker"),
    "training": (3.0, 1.0, 2.8, 1.2, "#fce5cd",
                 "training-flask-scheduler\nNginx :5555 → Gunicorn\nAPScheduler (1 worker)"),
    "mongo": (7.0, 4.5, 2.4, 1.1, "#fff2cc", "MongoDB\nDUMMY.dummy_col_demo\npredictions, jobs, locks"),
    "mlflow": (7.0, 1.6, 2.4, 1.1, "#ead1dc", "MLflow :5000\ntracking + registry\n(PostgreSQL / SQLite)"),
    "s3": (10.2, 1.6, 1.9, 1.1, "#ead1dc", "MinIO / S3\nmodel artifacts"),
    "prom": (10.2, 5.4, 1.9, 1.0, "#d0e0e3", "Prometheus\n:9090"),
    "grafana": (10.2, 3.8, 1.9, 1.0, "#d0e0e3", "Grafana\n:3000"),
}

ARROWS = [
    ("client", "etl", "ingest / jobs"),
    ("client", "serving", "predict"),
    ("client", "training", "train / rollback"),
    ("etl", "mongo", "rows (pending)"),
    ("etl", "serving", "PREDICTAPI batch"),
    ("serving", "mongo", "predictions"),
    ("training", "mongo", "training rows"),
    ("training", "mlflow", "runs, versions, aliases"),
    ("serving", "mlflow", "@champion"),
    ("training", "serving", "LOADMODELAPI nudge"),
    ("mlflow", "s3", "proxied artifacts"),
    ("prom", "grafana", "dashboards"),
]


def _centre(name: str) -> tuple[float, float]:
    x, y, w, h, *_ = BOXES[name]
    return x + w / 2, y + h / 2


def main() -> None:
    """Render the diagram."""
    fig, ax = plt.subplots(figsize=(12.5, 7.2), dpi=110)
    ax.set_xlim(0, 12.4)
    ax.set_ylim(0.5, 7.3)
    ax.axis("off")
    for x, y, w, h, colour, label in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#444444"))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=9)
    for start, end, label in ARROWS:
        (x1, y1), (x2, y2) = _centre(start), _centre(end)
        ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), arrowstyle="-|>", mutation_scale=12, color="#555555",
                                     shrinkA=38, shrinkB=38, connectionstyle="arc3,rad=0.08"))
        ax.text((x1 + x2) / 2, (y1 + y2) / 2 + 0.12, label, ha="center", fontsize=7.5, color="#333333")
    ax.text(11.15, 6.75, "scrapes /metrics of\nevery app", ha="center", fontsize=7.5, color="#333333")
    ax.set_title("ML pipeline stack", fontsize=13)
    fig.tight_layout()
    fig.savefig(OUT)


if __name__ == "__main__":
    main()
