"""Blockwise prediction on Dask: a LocalCluster on this machine or an existing scheduler (e.g. SLURM).

:func:`run_blocks` submits one task per unfinished block of a :class:`engine.blockwise.BlockPlan`. Each
worker process loads the model once (kept per process and model checksum), reads its block's tiles from
the input and writes labels (and probabilities) straight into the zarr output, then records the block
as finished; blocks are aligned to the output chunks, so writes never overlap. The driver only counts
finished blocks (progress) and cancels the outstanding ones on Ctrl-C or when the progress callback
returns False; blocks already finished stay recorded, so the same command resumes.

On SLURM, start a scheduler and workers with dask-jobqueue (one GPU and one thread per worker), then::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=1, processes=1, memory="16GB", job_extra_directives=["--gres=gpu:1"])
    cluster.scale(jobs=8)
    engine.predict_zarr("model", "scan.ome.zarr", "scan.ome.zarr", cluster=cluster.scheduler_address)

or ``deepseg predict model scan.ome.zarr --out scan.ome.zarr --cluster tcp://scheduler:8786``.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

from .errors import InputError
from .progress import Progress, ProgressCallback, report

__all__ = ["run_blocks", "connect"]

_LOCAL = re.compile(r"^local:(\d+)$")
CONNECT_TIMEOUT = "30s"  # how long to wait for a scheduler named by address


@contextlib.contextmanager
def connect(cluster: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster``: ``"local:N"`` starts a LocalCluster of N single-threaded
    worker processes (closed afterwards), ``"tcp://host:port"`` connects to a running scheduler, and a
    ``Client`` is used as it is."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("cluster prediction needs Dask: pip install 'deepseg[distributed]'") from None
    if isinstance(cluster, Client):
        yield cluster
        return
    text = str(cluster)
    local = _LOCAL.match(text)
    if local:
        workers = int(local.group(1))
        if workers < 1:
            raise InputError(f"cluster {text!r}: give at least one worker, e.g. local:2")
        with _glibc_defaults(), LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=40) as local_cluster, \
                Client(local_cluster) as client:
            yield client
        return
    if not re.match(r"^(tcp|tls|ucx|inproc)://", text):
        raise InputError(f"cluster {text!r} is not valid: expected local:N (e.g. local:2) or a scheduler address "
                         "such as tcp://scheduler:8786")
    try:
        client = Client(text, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise InputError(f"cannot reach the Dask scheduler at {text!r}: {err}") from None
    with client:
        yield client


def _glibc_defaults() -> Any:
    """Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive mmap
    threshold: every large tensor is then mapped and faulted in afresh, and prediction runs about 2x
    slower (measured). Workers of our LocalCluster keep glibc's defaults (set the variable yourself to
    keep Dask's)."""
    import dask

    return dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def _block_task(plan: Any, index: int) -> int:
    """Runs on a worker: one block (the model is loaded once per worker process)."""
    import torch
    from distributed import get_worker

    from .blockwise import run_block

    threads = max(1, int(get_worker().state.nthreads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return run_block(plan, index)


def run_blocks(plan: Any, todo: list[int], cluster: Any, progress: ProgressCallback | None = None) -> None:
    """Compute blocks ``todo`` of ``plan`` on a Dask cluster; progress counts finished blocks."""
    if not plan.model:
        raise InputError("cluster prediction needs a model folder (workers load it); save the model first")
    from distributed import as_completed

    total = len(plan.regions)
    done = total - len(todo)
    with connect(cluster) as client:
        report(progress, Progress("blocks", done, total, f"{done} of {total} blocks already finished"))
        futures = [client.submit(_block_task, plan, i, pure=False) for i in todo]
        try:
            for future in as_completed(futures):
                index = future.result()  # re-raises a worker's error here
                done += 1
                report(progress, Progress("blocks", done, total, f"block {index + 1} finished"))
        except BaseException:  # Ctrl-C, cancel by the callback, a failed block: stop the rest
            client.cancel(futures)
            raise
