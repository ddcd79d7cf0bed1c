"""Comparing jobs: the settings that differ, curves per metric, final values and differences."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ComparedJob(BaseModel):
    id: int
    name: str
    status: str
    num_rounds: int


class SettingDiff(BaseModel):
    setting: str
    values: list[str] = Field(description="one per job, in the order asked")


class MetricComparison(BaseModel):
    key: str
    label: str
    higher_is_better: bool
    curves: dict[int, list[tuple[int, float]]] = Field(description="job id -> (round, value)")
    final: dict[int, float | None] = Field(description="job id -> value at its last round")
    diff: dict[int, float | None] = Field(description="job id -> final - the first job's final")


class ComparisonPublic(BaseModel):
    jobs: list[ComparedJob]
    differing: list[SettingDiff]
    same_settings: int = Field(description="settings equal in every job")
    metrics: list[MetricComparison]
