"""Cluster support: SLURM job scripts, submission, arrays; device strategies."""
