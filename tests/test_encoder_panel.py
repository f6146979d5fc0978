"""The paper's 14-encoder panel is registered through the installed plugins, torch-free."""

from __future__ import annotations

import json
import subprocess
import sys

from rdmx.plugins import Plugins

# shared/reference/panel.md: name -> (role, input resolution, dim)
PANEL = {
    "inception": ("train", 299, 2048), "convnext": ("train", 224, 1024), "mae": ("train", 224, 1024),
    "clip": ("train", 256, 1024), "dinov3": ("train", 224, 1024), "pe-core": ("train", 224, 1024),
    "siglip2": ("train", 224, 1152), "aimv2": ("train", 224, 1536), "webssl": ("train", 224, 1536),
    "dreamsim": ("train", 224, 1792), "dinov2": ("heldout", 256, 1024), "siglip": ("heldout", 384, 1152),
    "radio": ("heldout", 256, 3072), "flux-vae": ("heldout", 256, 1024),
}


def test_all_panel_encoders_registered_with_paper_facts():
    reg = Plugins().load().registry("encoders")  # fresh: nothing built yet
    for name, (role, res, dim) in PANEL.items():
        e = reg.get(name)
        assert (e.meta["role_hint"], e.declared("resolution", {}), e.declared("dim", {})) == (role, res, dim), name
        assert e.meta["weights"] == "pretrained" and callable(e.meta["weights_available"])
        assert isinstance(e.factory, str)  # lazy "module:attr"
        fields = e.config.model_fields
        assert {"weights", "seed", "tiny", "resolution"} <= set(fields), name
    assert sum(r == "train" for r, _, _ in PANEL.values()) == 10
    assert reg.get("siglip2-text").meta["modality"] == "text"


def test_listing_and_weight_checks_do_not_import_torch():
    code = (
        "import sys, json\n"
        "from rdmx.plugins import get_plugins\n"
        "from rdmx.represent.weights import status\n"
        "reg = get_plugins().registry('encoders')\n"
        "st = {s.name: s.label for s in status(reg)}\n"
        "heavy = [m for m in ('torch', 'timm', 'transformers', 'diffusers', 'open_clip', 'dreamsim') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'status': st}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["heavy"] == []
    assert set(PANEL) <= set(res["status"])
