"""harness/processes.py: the ports the test servers, replicas and nginx are given."""

import socket

from harness.processes import _ephemeral_range, free_port


def test_free_port_is_bindable_and_outside_the_kernels_ephemeral_range():
    # a port from the ephemeral range can be handed by the kernel to any process that binds
    # without choosing (vLLM's torch.distributed store) between our pick and our bind
    ephemeral = _ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert not ports & set(ephemeral)
    assert len(ports) > 40  # random picks, not one port over and over
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
