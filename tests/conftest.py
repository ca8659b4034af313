"""What the whole suite shares: the CPU thread count it runs with, and which tests are slow.

Threads. Under pytest-xdist (the README's command runs `-n 2`), each worker takes an equal share of the cores.
Otherwise: a test session on a CPU that other work keeps busy can slow down 50x or more with torch's default of one
thread per core (every parallel region waits for the thread whose core is taken). So the session measures, at
start, a small convolutional training step with each candidate count (`cnnzoo.train.threads`, the trainer's own
choice) and runs with the fastest; `CNNZOO_TEST_THREADS=N` pins it. The header of the run says which.

Slow tests, in one place. `pytest -m "not slow"` is the quick first check (under 3 minutes on 2 cores); the
whole suite is CI's command. Slow are: the generic tests over the registry (test_models.py, test_profile.py) for
every model but one per family, the smallest (the quick check still builds, runs and profiles every family);
elsewhere, the per-model cases of the nets that take seconds each on the CPU (HEAVY_MODELS); the training runs
(a real run, a resume, a signal, a second process) and the README's commands (SLOW_FILES); the registry-wide
parameter-count check of `cnnzoo list`; and every test marked `slow` in its own file.
"""

import os

import pytest
import torch

# The nets whose generic tests (forward/backward, input-range search, twins, profiles) take seconds each here:
# measured with `pytest --durations=100` on 2 cores. The quick check covers every family through its other nets.
HEAVY_MODELS = frozenset({
    "resnet1202", "resnet1202_sd", "preact_resnet1001", "preact_resnet200", "densenet264", "densenet201",
    "densenet169", "densenet161", "densenet_bc250_k24", "densenet_bc190_k40", "densenet100_k24", "inception_v4",
    "inception_resnet_v2", "inception_resnet_v2_tf", "inception_v4_tf", "fractalnet40", "vgg19", "vgg19_bn",
    "vgg16_bn", "vgg13_bn",
    "wide_resnet101_2", "wide_resnet50_2", "resnext101_32x8d", "resnext101_64x4d", "resnext29_16x64d",
})

# Files that are training runs or command lines from end to end: slow as a whole.
SLOW_FILES = frozenset({"test_train.py", "test_train_safety.py", "test_readme.py", "test_threads.py",
                        "test_browser.py"})
# Files of generic tests over the whole registry: the quick check runs them for one model per family.
GENERIC_FILES = frozenset({"test_models.py", "test_profile.py", "test_optimize.py"})
SLOW_TESTS = frozenset({
    "test_list_counts_equal_count_params_of_every_model",
    # seconds each, with quicker tests of the same code in the quick check (measured with --durations)
    "test_empirical_keep_rate_matches_schedule", "test_list_json_has_computed_and_paper_params", "test_info_json",
    "test_resnet1202_params_table6", "test_all_chart_labels_do_not_overlap",
    "test_the_papers_sizes_from_real_files",
    "test_more_twin_weights_equal_torchvision",
    "test_every_twin_loads_torchvision_weights_strictly",
    "test_msra_pickle_converts_into_resnet50_with_equal_outputs",
    "test_timm_inception_resnet_v2_converts_with_equal_outputs",
    "test_trainer_holds_masks_and_codebooks_and_resumes_exactly",  # test_compress_train.py: 3 short runs each
    "test_runs_are_trained_then_reused_and_settings_checked",  # test_experiments.py: 2 short runs
    "test_ensemble_error_against_n_from_real_checkpoints",  # test_experiments.py: 4 short runs
    "test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one",  # test_experiments.py: 2 short runs
    # test_experiments.py: worker processes, each importing torch
    "test_runs_in_parallel_processes_equal_runs_one_after_another",
    "test_a_parallel_run_that_stops_stops_the_experiment_resumably", "test_a_failing_parallel_run_is_reported",
    "test_without_the_table_counts_are_built_then_cached",  # builds the zoo twice on the meta device
    # test_fx_random.py: 1000 and 1500 traced calls; the quick check keeps its draw-for-draw comparisons with eager
    "test_traced_keep_rates_follow_the_schedule", "test_traced_fractalnet_draws_at_the_papers_rates",
    # subprocesses that import torch, with in-process tests of the same commands in the quick check
    "test_info_shows_card_params_and_output_shape", "test_installed_cli_prints_one_line_for_an_input_past_int64",
})


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: left out of the quick check (pytest -m 'not slow')")
    torch.set_num_threads(_session_threads())


def pytest_report_header(config):
    return f"cnnzoo: torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s) ({_CHOICE[0]})"


_CHOICE = ["torch's default"]


def _session_threads() -> int:
    pinned = os.environ.get("CNNZOO_TEST_THREADS")
    if pinned:
        _CHOICE[0] = "CNNZOO_TEST_THREADS"
        return int(pinned)
    from cnnzoo.train.threads import cpu_candidates, measure_threads

    candidates = cpu_candidates()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # pytest-xdist: the cores are shared out among its workers
        _CHOICE[0] = f"{max(candidates)} core(s) shared by {workers} pytest-xdist workers"
        return max(1, max(candidates) // workers)
    if len(candidates) == 1:
        _CHOICE[0] = "one core available"
        return candidates[0]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(32, 10))
    x = torch.randn(8, 3, 64, 64)

    def step():
        net(x).sum().backward()
        net.zero_grad(set_to_none=True)

    rng = torch.get_rng_state()
    choice = measure_threads(step, candidates, budget=1.0)
    torch.set_rng_state(rng)
    shown = ", ".join(f"{n}: {1000 * t:.1f} ms" for n, t in sorted(choice.timings.items()))
    threads, t = choice.threads, choice.timings
    # Within 25% the probe's order is noise (on 2 idle cores here 1: 58 ms, 2: 52 ms, then 1: 47, 2: 55), while
    # the heavy tests (larger convolutions) gain more from threads than the probe: take the larger count. A busy
    # core makes the larger count many times slower, far outside this margin.
    most = max(t) if t else threads
    if most != threads and t[most] <= 1.25 * t[threads]:
        threads = most
    _CHOICE[0] = (f"the fastest small training step at start, the larger count within 25%: {shown}; "
                  f"CNNZOO_TEST_THREADS=N pins it")
    return threads


@pytest.fixture
def one_thread():
    """For files of tiny tensors (`pytestmark = pytest.mark.usefixtures("one_thread")`): one thread, since more
    only add contention on a shared machine; the session's count is restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _one_per_family() -> set[str]:
    """Each family's model with the smallest native input (then the first name): the cheapest to run."""
    from cnnzoo.registry import list_models, model_card

    best: dict[str, tuple] = {}
    for name in list_models():
        card = model_card(name)
        key = (card.input_size[1] * card.input_size[2], name)
        best[card.family] = min(best.get(card.family, key), key)
    return {name for _, name in best.values()}


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    quick_models = _one_per_family()
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = params.get("name")
        if (item.path.name in SLOW_FILES or item.originalname in SLOW_TESTS or name in HEAVY_MODELS
                or (item.path.name in GENERIC_FILES and isinstance(name, str) and name not in quick_models)):
            item.add_marker(slow)
