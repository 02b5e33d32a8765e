"""cluster.yaml against the Ray cluster launcher's own schema, and against what deqlab needs of it."""

import json
import os
import re
from importlib import metadata

import jsonschema
import ray.autoscaler
import yaml


def load():
    with open("cluster.yaml") as f:
        return yaml.safe_load(f)


def test_cluster_yaml_passes_the_launchers_schema():
    config = load()
    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        schema = json.load(f)
    jsonschema.validate(config, schema)  # the check `ray up` runs first
    # the launcher's further rules (ray.autoscaler._private.util.validate_config)
    assert config["head_node_type"] in config["available_node_types"]
    assert sum(t.get("min_workers", 0) for t in config["available_node_types"].values()) <= config["max_workers"]
    for name, node_type in config["available_node_types"].items():
        assert {"node_config", "resources"} <= set(node_type), name
        assert node_type.get("max_workers", 0) <= config["max_workers"]


def test_cluster_yaml_fits_deqlab():
    config = load()
    ray_version = metadata.version("ray")
    image = config["docker"]["image"]
    assert re.fullmatch(rf"rayproject/ray:{re.escape(ray_version)}-py3\d+-gpu", image), image
    gpu_types = [t for t in config["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and max(t["max_workers"] for t in gpu_types) >= 2  # gpu_cluster.yaml: 2 GPU workers a trial
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "/home/ray/deqlab" in setup and "deqlab data get mnist" in setup
    assert "/home/ray/deqlab" in config["file_mounts"]
    assert "DEQLAB_STORAGE=s3://" in setup  # results in storage every node can reach


def test_every_node_that_runs_trials_can_write_s3():
    """Trials write their own results: each node type with resources for them needs the instance profile
    `ray up` creates for the head with S3 access (the launcher attaches none to workers by itself)."""
    config = load()
    runs_trials = {name: t for name, t in config["available_node_types"].items()
                   if t["resources"].get("CPU", 1) > 0 or t["resources"].get("GPU", 0) > 0}
    assert runs_trials and config["head_node_type"] not in runs_trials  # the head (CPU 0) runs no trial
    for name, node_type in runs_trials.items():
        assert node_type["node_config"].get("IamInstanceProfile") == {"Name": _launcher_default_profile()}, name


def _launcher_default_profile() -> str:
    """The profile name `ray up` gives the head, read from the launcher's source (importing it needs boto3)."""
    source = open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "_private", "aws", "config.py")).read()
    prefix = re.search(r'^RAY = "([^"]+)"', source, re.M).group(1)
    suffix = re.search(r'^DEFAULT_RAY_INSTANCE_PROFILE = RAY \+ "([^"]+)"', source, re.M).group(1)
    assert "AmazonS3FullAccess" in source  # the policy the launcher attaches to that profile's role
    return prefix + suffix
