"""The arithmetic bench_conv_limits reports about the pruned structure."""
import evsim
from benchmarks.bench_conv import SPEC
from benchmarks.bench_conv_limits import filter_share_for


def test_the_filter_share_for_a_target_gives_that_target_back():
    """With the returned share of conv2's filters dead (its pooling following), the Amdahl
    bound of the per-layer times is the target; out of reach shows as a share above 1."""
    network = evsim.Network.from_spec(SPEC, rng=1)
    forward = [40.0, 10.0, 45.0, 0.5, 2.0, 0.2]
    backward = [35.0, 0.0, 90.0, 0.5, 25.0, 0.3]
    shares = [0.0, 0.0, 0.1, 0.1, 0.65, 0.0]
    spent = [f + b for f, b in zip(forward, backward)]
    for target in (1.2, 1.5):
        x = filter_share_for(target, forward, backward, shares, network)
        with_x = [0.0, 0.0, x, x, 0.65, 0.0]
        assert abs(sum(spent) / sum(t * (1 - s) for t, s in zip(spent, with_x)) - target) < 1e-12
    assert filter_share_for(3.0, forward, backward, shares, network) > 1
