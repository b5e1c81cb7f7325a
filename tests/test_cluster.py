"""cluster.yaml is a valid Ray autoscaler config, carries no secrets, shares nothing between
nodes but the bucket, and runs only what the package ships."""

import importlib.util
import json
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema():
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(load(), schema)


def test_cluster_has_cpu_head_and_autoscaling_gpu_workers():
    config = load()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 1 and t["min_workers"] == 0
               and t["max_workers"] >= 1 for t in workers)
    assert config["provider"]["type"] == "aws"
    assert any("pip install" in c and "~/icam" in c for c in config["setup_commands"])


def test_cluster_yaml_carries_no_credentials():
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"aws_(secret_)?access_key", text, re.IGNORECASE)
    assert not re.search(r"(password|secret|token)\s*:", text, re.IGNORECASE)
    assert "ssh_private_key" not in text


NODE_COMMANDS = ("initialization_commands", "setup_commands", "head_setup_commands",
                 "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
RAY_FILES = {"~/ray_bootstrap_config.yaml"}
"""Files on a node that `ray up` writes itself (the autoscaler's copy of this config)."""


def shipped_files() -> set[str]:
    """The files `ray up` syncs to ~/icam (file_mounts "."): those git tracks."""
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_every_node_command_refers_only_to_files_the_package_ships():
    config = load()
    assert config["file_mounts"] == {"~/icam": "."}
    shipped = shipped_files()
    commands = [c for key in NODE_COMMANDS for c in config.get(key) or []]
    assert commands
    modules, files = [], []
    for command in commands:
        words = shlex.split(command.replace(";", " ; "))
        modules += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]
        modules += re.findall(r"(?:from|import) (icam[\w.]*)", command)
        files += [w.split("=", 1)[-1] for w in words if w.split("=", 1)[-1].startswith("~/")]
    for module in modules:
        if module.split(".")[0] == "icam":
            assert importlib.util.find_spec(module) is not None, module
            origin = Path(importlib.util.find_spec(module).origin).resolve()
            assert origin.relative_to(ROOT).as_posix() in shipped, module
        else:  # a tool of the Python it runs on
            assert module in ("pip",), f"{module}: not shipped by the package"
    for path in files:
        if path == "~/icam":
            continue
        inside = path.removeprefix("~/icam/")
        assert path in RAY_FILES or (path != inside and inside in shipped), (
            f"{path}: not a file the package ships")
    text = " ".join(commands).lower()
    assert "mount" not in text and "efs" not in text and "nfs" not in text  # no shared disk


def test_storage_and_inputs_come_from_the_bucket_only():
    config = load()
    text = (ROOT / "cluster.yaml").read_text()
    assert "/mnt/" not in text and "efs" not in text.lower()
    worker = config["available_node_types"]["gpu_worker"]["node_config"]
    assert worker["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "<worker-profile>" in worker["IamInstanceProfile"]["Arn"]
    setup = " ".join(config["setup_commands"])
    assert "s3://<your-bucket>/icam-inputs" in setup
