"""cluster.yaml is a valid Ray autoscaler config and carries no secrets."""

import json
import re
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
