"""Running a sweep's launch on a multi-node Ray cluster: Ray Jobs, SLURM, KubeRay.

``common`` (the launch command line, the sweep check, names), ``jobs`` (Ray Jobs submission,
following and state), ``nodes`` (waiting for a cluster's nodes), ``slurm`` (an sbatch script from
``templates/slurm.sbatch``), ``kuberay`` (a RayJob manifest), ``quoting`` and ``kubernetes``
(what input may put in those files). Every bad input is a
:class:`~orchestration.errors.ClusterError` (exit 2).
"""
