"""Multi-host start-up: the same command runs on every host of a pod."""
import jax
from absl import logging


def maybe_initialize(dist_cfg) -> None:
    """Calls jax.distributed.initialize() when the config asks for it.

    On TPU pods and SLURM/GPU clusters no arguments are needed (JAX discovers the peers); an
    explicit coordinator address/process count/id serves other clusters and local tests.
    """
    if not dist_cfg.initialize:
        return
    kwargs = {}
    if dist_cfg.coordinator_address:
        if dist_cfg.num_processes <= 0 or dist_cfg.process_id < 0:
            raise ValueError("distributed.coordinator_address is set: also set distributed.num_processes and "
                             "distributed.process_id (this host's index)")
        kwargs = dict(coordinator_address=dist_cfg.coordinator_address, num_processes=dist_cfg.num_processes,
                      process_id=dist_cfg.process_id)
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
