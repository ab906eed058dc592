"""Reliability scenarios: a real deployment (nginx with deploy/nginx/nginx.conf, two nanoserve
replicas, Redis; all on loopback) broken on purpose, and what its clients see. Run them as
`python -m reliability [--write] [SCENARIO ... | fast]` (reliability/run.py) and the soak as
`python -m reliability.soak`; the figures are recorded in reliability/results/reliability.json,
from which reliability/doc.py writes docs/RELIABILITY.md."""
