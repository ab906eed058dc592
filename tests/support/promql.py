"""The PromQL the operator files hold: deploy/grafana/nanoserve.json's panel queries and
deploy/prometheus/nanoserve.rules.yml's alert expressions, and the metric names they use."""

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "nanoserve.rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "nanoserve.json"
OPERATORS = {"and", "or", "unless", "bool"}


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for g in groups for rule in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: the identifiers left once label matchers,
    ranges and grouping clauses are dropped, but for functions (followed by `(`)."""
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, ranges
    expr = re.sub(r"\b(by|on|without|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if not expr[m.end() :].lstrip().startswith("("):
            names.add(m.group())
    return names - OPERATORS


def used_names() -> set[str]:
    """Every metric name the dashboard and the rules use."""
    return set().union(*(metric_names(e) for e in dashboard_exprs() + rule_exprs()))
