"""What the benchmarks (bench/), the reliability scenarios (reliability/) and the tests share:
starting, awaiting and stopping the processes they measure (`harness.processes`)."""
