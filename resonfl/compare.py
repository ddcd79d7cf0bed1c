"""`Client.compare(ids)`'s answer: one row per job with the settings that differ, the final
metrics and each metric's difference from the first job; prints as an aligned table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class CompareTable:
    columns: list[str]
    rows: list[dict[str, Any]]
    raw: dict[str, Any]  # the API's answer (curves per metric included)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> CompareTable:
        jobs = data["jobs"]
        settings = [d["setting"] for d in data["differing"]]
        columns = ["job", "name", "status", *settings]
        rows: list[dict[str, Any]] = []
        for i, job in enumerate(jobs):
            row: dict[str, Any] = {"job": job["id"], "name": job["name"], "status": job["status"]}
            for diff in data["differing"]:
                row[diff["setting"]] = diff["values"][i]
            rows.append(row)
        for metric in data["metrics"]:
            key = metric["key"]
            columns += [key, f"{key} diff"]
            for row in rows:
                row[key] = metric["final"].get(str(row["job"]), metric["final"].get(row["job"]))
                row[f"{key} diff"] = metric["diff"].get(str(row["job"]), metric["diff"].get(row["job"]))
        return cls(columns, rows, data)

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]

    def to_pandas(self) -> Any:
        import pandas as pd  # lazy: optional, only for those who have it

        return pd.DataFrame(self.rows, columns=self.columns)

    def __str__(self) -> str:
        cells = [[_cell(row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
