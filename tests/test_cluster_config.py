"""cluster.yaml against the Ray cluster launcher's own schema, and against what deqlab needs of it."""

import ast
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


def test_cluster_yaml_is_secure_as_written():
    """Token authentication with a token from outside the repository, a security group open for SSH only
    (the rules the launcher creates, read from its source: it imports boto3), the dashboard on loopback."""
    config = load()
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"  # yours, copied by `ray up`
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]  # `ray exec` drivers too
    assert not re.search(r"\b[0-9a-f]{32,}\b", open("cluster.yaml").read())  # no token written in the recipe
    assert config["provider"]["security_group"] == {"GroupName": "deqlab-ssh-only"}  # no IpPermissions added
    assert not any("SecurityGroupIds" in t["node_config"] for t in config["available_node_types"].values())
    tree = ast.parse(open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "_private", "aws",
                                       "config.py")).read())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    merged = ast.unparse(functions["_create_default_inbound_rules"])
    assert "chain(intracluster_rules, ssh_rules, extended_rules)" in merged.replace("\n", "").replace("    ", "")
    ssh = ast.literal_eval(functions["_create_default_ssh_inbound_rules"].body[-1].value)
    assert ssh == [{"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    intracluster = ast.unparse(functions["_create_default_intracluster_inbound_rules"])
    assert "'GroupId': security_group_id" in intracluster and "CidrIp" not in intracluster  # the nodes only
    for command in (*config["head_start_ray_commands"], *config["worker_start_ray_commands"]):
        assert "0.0.0.0" not in command and ("ray start" not in command or "RAY_AUTH_MODE=token" in command)
