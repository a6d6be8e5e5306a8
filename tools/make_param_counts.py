#!/usr/bin/env python3
"""Parameter counts of full-size configs as transformers builds the models, for the planner's
test (tests/test_family.c, test_family_graph_params). Outside the C suite; needs torch and
transformers (pip install torch transformers; 5.24 made the shipped file):

    python3 tools/make_param_counts.py tests/data/param-counts

Each model is instantiated on torch's meta device (shapes only, no memory for weights) from its
config: transformers' default AXK2Config and DeepseekV32Config (written to axk2-default.json and
dsv32-default.json, so the test plans exactly those configs) and the shipped models/axk2-light, models/deepseek-v32, models/deepseek-v3 and
models/axk1 configs. counts.json holds, per config file, num_parameters() and the elements of
the state dict (parameters plus persistent buffers: the routers' e_score_correction_bias), which is
what a checkpoint stores and what the planner counts.
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AXK2Config, DeepseekV32Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ["models/axk2-light", "models/deepseek-v32", "models/deepseek-v3", "models/axk1"]


def count(config):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = model.num_parameters()
    state = sum(t.numel() for t in model.state_dict().values())
    return {"architecture": type(model).__name__, "num_parameters": params, "state_dict_elements": state}


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    counts = {"transformers": transformers.__version__, "torch": torch.__version__, "configs": {}}
    for name, default in (("axk2-default.json", AXK2Config()), ("dsv32-default.json", DeepseekV32Config())):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(default.to_json_string(use_diff=False))
        counts["configs"][os.path.relpath(os.path.join(out_dir, name), ROOT)] = count(default)
    for d in SHIPPED:
        counts["configs"][d + "/config.json"] = count(AutoConfig.from_pretrained(os.path.join(ROOT, d)))
        print(d, counts["configs"][d + "/config.json"], file=sys.stderr)
    with open(os.path.join(out_dir, "counts.json"), "w") as f:
        json.dump(counts, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_param_counts.py OUT_DIR")
    main(sys.argv[1])
