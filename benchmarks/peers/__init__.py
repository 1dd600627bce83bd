"""Helpers for ``benchmarks.bench_peers``: the Python peers' producers and workers
(``pyqueues``) and the BullMQ driver (``bullmq_driver.js``, run by Node with the ``bullmq``
package installed outside the repository)."""
