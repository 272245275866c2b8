"""What backends on engines we did not write (Dask, Ray) share: one input batch as ONE task of
the engine, run with the same per-input semantics as the local backend's workers.

    caller: EngineSession (session.py) ── one engine task per batch, at most `slots` at once ──┐
        ▲ frames: results, log lines, errors, "ended"                                          │
        └──────────── the engine's own channel (Dask events, Ray streaming generator) ◄───┐    │
                                                                                          │    ▼
    engine worker process: run_batch (runner.py) ── WorkerPool of clean worker processes (worker.py)

The engine schedules and places tasks; the calls themselves run in Burla's own worker processes
(`python -m burla_core.engine.worker`, one clean interpreter each, kept warm in the engine's worker
process), so that output is captured per input, a call that kills its process is retried once
and then reported as WORKER_DIED, a cancel really stops the call, and a nested
remote_parallel_map inside the function starts from a process without the engine's state.
"""
