"""A trained FLUX.2 [klein] student leaves rdmx as a diffusers pipeline that makes the same images,
and the release's student file (Black Forest Labs' key layout under ``model.``) is read by rdmx eval."""

from __future__ import annotations

import json

import pytest
import torch
from flux2_tiny import make_workspace, t2i_recipe

from rdmx.checkpoints import load_generator
from rdmx.errors import RdmxError
from rdmx.export import export_checkpoint
from rdmx.run import RESOLVED_RECIPE, write_resolved_recipe
from rdmx.train.loop import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_workspace(tmp_path_factory.mktemp("t2i-export"))
    resolved = t2i_recipe(root, steps=2, micro_batch=4, lr=0.05)
    Trainer(resolved, root / "run", progress=False).run(resume=False)
    write_resolved_recipe(resolved, root / "run" / RESOLVED_RECIPE)
    return root, resolved


def test_the_diffusers_pipeline_makes_the_image_rdmx_makes(trained):
    from diffusers import Flux2KleinPipeline

    root, resolved = trained
    export_checkpoint(root / "run", "diffusers", root / "pipe")
    assert json.loads((root / "pipe" / "model_index.json").read_text())["is_distilled"] is True
    sampling = json.loads((root / "pipe" / "rdmx_sampling.json").read_text())
    assert sampling["num_inference_steps"] == 1 and sampling["max_sequence_length"] == 12
    pipe = Flux2KleinPipeline.from_pretrained(str(root / "pipe"))
    comp, _ = load_generator(resolved, root / "run")
    gen = comp.generator
    noise = gen.sample_noise(2, torch.Generator().manual_seed(2024))
    ids = torch.tensor([0, 3])
    prompts = [gen.prompts[i] for i in ids.tolist()]
    with torch.no_grad():
        want = gen(noise, ids)
        args = {k: v for k, v in sampling.items() if k not in ("max_sequence_length", "text_encoder_out_layers")}
        # everything after the prompt encoder, in float32 like rdmx: the same image up to op order
        got = pipe(prompt_embeds=gen.states.rows(ids).float(), latents=noise, output_type="pt", **args).images
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < 1e-5
        # from the prompts, with the pipeline's own bf16 Qwen3 encoding: the same hidden states to one
        # bf16 rounding (measured 1e-3), the image to 4.5e-4
        embeds, _ = pipe.encode_prompt(prompt=prompts, max_sequence_length=sampling["max_sequence_length"],
                                       text_encoder_out_layers=tuple(sampling["text_encoder_out_layers"]))
        assert torch.allclose(embeds.float(), gen.states.rows(ids).float(), rtol=1e-2, atol=2e-3)
        got = pipe(prompt_embeds=embeds.float(), latents=noise, output_type="pt", **args).images
        assert (got - want).abs().max().item() < 2e-3
        # as users load it: the whole pipeline in bf16, from the prompt
        bf16 = Flux2KleinPipeline.from_pretrained(str(root / "pipe"), torch_dtype=torch.bfloat16)
        loose = bf16(prompt=prompts, latents=noise, output_type="pt", **sampling).images.float()
    assert (loose - want).abs().max().item() < 0.1


def _bfl_layout(diffusers_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The transformer's weights under Black Forest Labs' names (the release's layout), written out:
    fused q/k/v, (shift, scale) order of the final modulation, `.scale` for the q/k norms."""
    out = {}
    for k, v in diffusers_state.items():
        out[k] = v
    ren = {"x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
           "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
           "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
           "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
           "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
           "single_stream_modulation.linear": "single_stream_modulation.lin"}
    bfl = {}
    for k, v in diffusers_state.items():
        if k.startswith("transformer_blocks."):
            _, i, *rest = k.split(".")
            name = ".".join(rest)
            double = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale",
                      "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
                      "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
                      "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
                      "attn.to_out.0.weight": "img_attn.proj.weight", "attn.to_add_out.weight": "txt_attn.proj.weight",
                      "ff.linear_in.weight": "img_mlp.0.weight", "ff.linear_out.weight": "img_mlp.2.weight",
                      "ff_context.linear_in.weight": "txt_mlp.0.weight",
                      "ff_context.linear_out.weight": "txt_mlp.2.weight"}
            if name in double:
                bfl[f"double_blocks.{i}.{double[name]}"] = v
            elif name == "attn.to_q.weight":
                p = f"transformer_blocks.{i}.attn."
                bfl[f"double_blocks.{i}.img_attn.qkv.weight"] = torch.cat(
                    [diffusers_state[p + "to_q.weight"], diffusers_state[p + "to_k.weight"], diffusers_state[p + "to_v.weight"]])
            elif name == "attn.add_q_proj.weight":
                p = f"transformer_blocks.{i}.attn."
                bfl[f"double_blocks.{i}.txt_attn.qkv.weight"] = torch.cat(
                    [diffusers_state[p + "add_q_proj.weight"], diffusers_state[p + "add_k_proj.weight"],
                     diffusers_state[p + "add_v_proj.weight"]])
            elif not name.startswith(("attn.to_k", "attn.to_v", "attn.add_k", "attn.add_v")):
                raise AssertionError(k)
        elif k.startswith("single_transformer_blocks."):
            _, i, *rest = k.split(".")
            single = {"attn.to_qkv_mlp_proj.weight": "linear1.weight", "attn.to_out.weight": "linear2.weight",
                      "attn.norm_q.weight": "norm.query_norm.scale", "attn.norm_k.weight": "norm.key_norm.scale"}
            bfl[f"single_blocks.{i}.{single['.'.join(rest)]}"] = v
        elif k == "norm_out.linear.weight":
            scale, shift = v.chunk(2, dim=0)
            bfl["final_layer.adaLN_modulation.1.weight"] = torch.cat([shift, scale])
        else:
            base, param = k.rsplit(".", 1)
            bfl[f"{ren.get(base, base)}.{param}"] = v
    return bfl


def test_the_releases_student_file_is_read_by_eval(trained, tmp_path):
    root, resolved = trained
    comp, _ = load_generator(resolved, root / "run", "raw")
    student = {k: v.detach().clone() for k, v in comp.generator.transformer.state_dict().items()}
    release = {f"model.{k}": v for k, v in _bfl_layout(student).items()}
    torch.save({"model": release}, tmp_path / "flux2_klein_1step_rdm_geallcoco_s180.pth")
    got, ckpt = load_generator(resolved, tmp_path / "flux2_klein_1step_rdm_geallcoco_s180.pth")
    assert ckpt.step == 0 and got.weights == "raw"
    mine = got.generator.transformer.state_dict()
    assert mine.keys() == student.keys() and all(torch.equal(mine[k], student[k]) for k in student)
    # the warm start reads it too
    from rdmx.recipe import with_overrides
    from rdmx.train.build import build_generator

    path = tmp_path / "flux2_klein_1step_rdm_geallcoco_s180.pth"
    warm = build_generator(with_overrides(resolved, [f"generator.weights={json.dumps(str(path))}"]), torch.device("cpu"))
    assert all(torch.equal(warm.transformer.state_dict()[k], student[k]) for k in student)
    release.pop(next(k for k in release if "single_blocks.0.linear2" in k))
    torch.save({"model": release}, tmp_path / "short.pth")
    with pytest.raises(RdmxError, match=r"do not fit this recipe's FLUX.2 \[klein\] transformer .*missing 1: "
                                        r"single_transformer_blocks.0.attn.to_out.weight"):
        load_generator(resolved, tmp_path / "short.pth")
