"""What the benchmarks (bench/), the reliability scenarios (reliability/) and the tests share:
starting, awaiting and stopping the processes they measure (`harness.processes`: servers,
Redis, ports), nginx with the shipped configuration (`harness.nginx`), and what they ask of a
running server (`harness.probes`: waiting, /metrics through prometheus' parser, bursts)."""
