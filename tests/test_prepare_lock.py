"""Several processes (here threads, which take the same file lock) preparing one task at once, and
staging folders left behind by a killed preparation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tasks.prepare import OptionPlan, prepare_task
from tasks.registry import get_task


def _prepare(cub_root, cache, force=False):
    task = get_task("bird200")
    return prepare_task(
        task, task.read(cub_root), OptionPlan("random", k=4), seed=0, cache_root=cache, force=force
    )


def test_concurrent_preparations_of_one_entry_all_succeed(cub_root, tmp_path):
    cache = tmp_path / "prepared"
    for force in (False, True):  # a cold cache, then --force over an existing entry
        with ThreadPoolExecutor(4) as pool:
            prepared = list(pool.map(lambda _, force=force: _prepare(cub_root, cache, force), range(4)))
        assert len({task.path for task in prepared}) == 1
        assert all(task.load().num_rows == prepared[0].n_rows for task in prepared)
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [prepared[0].path.name]


def test_staging_folders_of_a_killed_preparation_are_removed(cub_root, tmp_path):
    cache = tmp_path / "prepared"
    final = _prepare(cub_root, cache).path
    stale = cache / f".{final.name}.k1ll3d"  # what tempfile.mkdtemp left when the process was killed
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "half-written.arrow").write_bytes(b"\0" * 1024)
    _prepare(cub_root, cache, force=True)
    assert not stale.exists() and (final / "prepared.json").is_file()
