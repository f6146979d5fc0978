"""flux2-klein on tiny random FLUX.2 classes: equal to diffusers' pipeline, prompt states equal to
its Qwen3 recipe, the prompt-state cache, gradients through the frozen VAE decoder, real-size facts."""

from __future__ import annotations

import json
import time

import pytest
import torch

from flux2_tiny import ENTRY, PROMPTS, tiny_config
from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.testing import isolate_weight_caches
from rdmx.train.generator import DataInfo
from rdmx_flux2 import text_states
from rdmx_flux2.generator import flow_schedule

INFO = DataInfo((3, 64, 64), prompts=PROMPTS)


def build(tmp_path, info=INFO, **kw):
    return ENTRY.build(tiny_config(tmp_path, **kw), info)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    return build(tmp_path_factory.mktemp("flux2"))


def noise(n, seed=0, shape=(16, 4, 4)):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_contract_shapes_and_frozen_parts(gen):
    assert gen.noise_shape == (16, 4, 4) and gen.prompts == PROMPTS
    with torch.no_grad():
        img = gen(noise(3), torch.tensor([0, 3, 4]))
    assert img.shape == (3, 3, 64, 64) and img.dtype == torch.float32
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    trainable = {n.split(".")[0] for n, p in gen.named_parameters() if p.requires_grad}
    assert trainable == {"transformer"} and all(p.dtype == torch.float32 for p in gen.transformer.parameters())
    assert not any(p.requires_grad for p in gen.vae.parameters())
    assert len(gen.shard_units()) == 2  # 1 double-stream + 1 single-stream block in the tiny model
    assert not any(k.startswith("vae.encoder") for k in gen.state_dict())  # the VAE encoder is never built
    with torch.no_grad():
        torch.testing.assert_close(img[2], gen(noise(3)[2:], torch.tensor([4]))[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(RdmxError, match="text-conditional"):
        gen(noise(1))


def test_prompt_states_follow_diffusers_qwen3_recipe(gen):
    from diffusers import Flux2KleinPipeline
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from rdmx.represent.presets import seeded

    src = gen.text.source
    with seeded(src.seed):
        model = Qwen3ForCausalLM(Qwen3Config(**src.config)).to(torch.bfloat16).eval()
    tok = AutoTokenizer.from_pretrained(str(src.tokenizer_dir))
    want = Flux2KleinPipeline._get_qwen3_prompt_embeds(model, tok, list(PROMPTS), max_sequence_length=12)
    got = gen.states.rows(torch.arange(len(PROMPTS)))
    assert got.dtype == torch.bfloat16 and got.shape == (5, 12, 3 * 16)
    assert torch.equal(got, want)  # bit-exact: the cache stores the bfloat16 bits
    assert gen.states.states.shape[0] == 4  # the repeated prompt is encoded and stored once


@pytest.mark.parametrize("steps", [1, 4])
def test_forward_equals_the_diffusers_pipeline(tmp_path, steps):
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    g = build(tmp_path, steps=steps)
    with torch.no_grad():  # a VAE with non-trivial latent statistics
        g.vae.bn_mean.uniform_(-0.5, 0.5)
        g.vae.bn_var.uniform_(0.5, 2.0)
    vae = _vae_like(g)
    pipe = Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), vae=vae,
                              text_encoder=None, tokenizer=None, transformer=g.transformer, is_distilled=True)
    ids = torch.tensor([1, 2, 0])
    eps = noise(3, seed=4)
    with torch.no_grad():
        want = pipe(prompt_embeds=g.states.rows(ids).float(), latents=eps, height=64, width=64,
                    num_inference_steps=steps, guidance_scale=1.0, output_type="pt").images
        got = g(eps, ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _vae_like(g):
    """A diffusers AutoencoderKLFlux2 carrying the generator's decoder and latent statistics."""
    from diffusers import AutoencoderKLFlux2

    from rdmx_flux2.plugin import TINY_VAE

    vae = AutoencoderKLFlux2(**TINY_VAE)
    vae.decoder.load_state_dict(g.vae.decoder.state_dict())
    vae.post_quant_conv.load_state_dict(g.vae.post_quant_conv.state_dict())
    vae.bn.running_mean.copy_(g.vae.bn_mean)
    vae.bn.running_var.copy_(g.vae.bn_var)
    return vae.eval()


def test_one_step_starts_at_t1_and_the_schedule_is_flux2s():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    assert flow_schedule(1, 1024) == [1.0, 0.0]
    for steps, seq in ((4, 1024), (4, 16), (8, 4096)):
        sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        sched.set_timesteps(sigmas=[1 - i / steps for i in range(steps)], mu=compute_empirical_mu(seq, steps))
        torch.testing.assert_close(torch.tensor(flow_schedule(steps, seq), dtype=torch.float64), sched.sigmas.double(),
                                   rtol=1e-6, atol=1e-7)


def test_gradients_reach_the_transformer_through_the_vae_decoder(gen):
    seen = {}
    hook = gen.vae.decoder.register_forward_hook(lambda m, a, out: seen.update(out=out))
    try:
        img = gen(noise(2, seed=1), torch.tensor([0, 1]))
        seen["out"].retain_grad()
        (img * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    finally:
        hook.remove()
    assert seen["out"].grad is not None and seen["out"].grad.abs().sum() > 0
    grads = [p.grad for p in gen.transformer.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in gen.vae.parameters())
    gen.zero_grad(set_to_none=True)


def test_block_checkpointing_and_bf16_autocast(tmp_path):
    def grads(g):
        g.zero_grad(set_to_none=True)
        out = g(noise(2, seed=2), torch.tensor([2, 3]))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), torch.cat([p.grad.flatten() for p in g.transformer.parameters()])

    plain, ckpt = build(tmp_path), build(tmp_path, checkpoint_blocks=True)
    assert ckpt.transformer.is_gradient_checkpointing
    (a, ga), (b, gb) = grads(plain), grads(ckpt)
    torch.testing.assert_close(b, a)
    torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-7)
    low = build(tmp_path, autocast="bfloat16", vae_dtype="bfloat16")
    c, gc = grads(low)
    assert low.vae.decoder.conv_in.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in low.transformer.parameters())
    assert (c - a).abs().max() < 0.1 and torch.nn.functional.cosine_similarity(gc, ga, dim=0) > 0.9


def test_prompt_state_cache_is_reused_and_refused_when_its_fingerprint_differs(tmp_path, monkeypatch):
    loads = []
    original = text_states.Qwen3PromptEncoder.load
    monkeypatch.setattr(text_states.Qwen3PromptEncoder, "load", lambda self: (loads.append(1), original(self))[1])
    first = build(tmp_path)
    assert len(loads) == 1
    second = build(tmp_path)
    assert len(loads) == 1 and second.states.path == first.states.path  # reused: the text encoder never loaded
    assert second.states.path.parent.name == "prompt-states" and second.states.path.name == first.states.fingerprint
    with pytest.raises(RdmxError, match=r"ctx_len: 12 there, 10 here"):
        build(tmp_path, ctx_len=10, prompt_states=str(first.states.path))
    other = DataInfo((3, 64, 64), prompts=("a blue ball",))
    with pytest.raises(RdmxError, match=r"prompts: '[0-9a-f]+' there, '[0-9a-f]+' here\); refusing"):
        build(tmp_path, info=other, prompt_states=str(first.states.path))
    assert len(loads) == 1
    # a pool of other prompts, or another context length, is another fingerprint: computed anew
    assert build(tmp_path, ctx_len=10).states.fingerprint != first.states.fingerprint
    manifest = json.loads((first.states.path / "manifest.json").read_text())
    assert manifest["describes"]["layers"] == [9, 18, 27] and manifest["describes"]["count"] == 5


def test_set_prompts_switches_the_pool(tmp_path):
    g = build(tmp_path)
    before = g(noise(1, seed=5), torch.tensor([1]))
    g.set_prompts(["a blue ball", "a red cube on a table"])
    assert g.prompts == ("a blue ball", "a red cube on a table")
    torch.testing.assert_close(g(noise(1, seed=5), torch.tensor([0])), before)  # same prompt, same image
    with pytest.raises(RdmxError, match=r"prompt ids must lie in \[0, 2\)"):
        g(noise(1), torch.tensor([2]))


def test_needs_a_prompt_pool_and_tokenizer(tmp_path):
    with pytest.raises(RdmxError, match="needs a prompt pool"):
        build(tmp_path, info=DataInfo((3, 64, 64)))
    cfg = tiny_config(tmp_path)
    cfg.pop("tokenizer")
    with pytest.raises(RdmxError, match="tokenizer"):
        ENTRY.build(cfg, INFO)
    with pytest.raises(Exception, match="multiple of 16"):
        build(tmp_path, resolution=72)


def test_missing_weights_fail_fast_with_the_fetch_command(tmp_path, monkeypatch):
    isolate_weight_caches(tmp_path, monkeypatch)
    t = time.perf_counter()
    with pytest.raises(WeightsMissingError, match=r"rdmx weights fetch flux2-klein"):
        ENTRY.build({}, INFO)
    assert time.perf_counter() - t < 5
    assert ENTRY.meta_value("weights_available") is False
    with pytest.raises(RdmxError, match="not a diffusers FLUX.2"):
        ENTRY.build({"weights": str(tmp_path)}, INFO)
    # `rdmx weights list / fetch` cover generators
    from rdmx.represent import weights

    row = next(s for s in weights.status() if s.name == "flux2-klein")
    assert row.label == "missing" and "FLUX.2-klein-4B/transformer" in row.where
    with pytest.raises(RdmxError, match="cannot fetch 'flux2-klein': HF_HUB_OFFLINE is set"):
        weights.fetch(["flux2-klein"])


def test_real_size_klein_4b_on_meta():
    from rdmx_flux2.generator import build_models
    from rdmx_flux2.plugin import Flux2KleinConfig

    with torch.device("meta"):
        transformer, vae, folder = build_models(Flux2KleinConfig(weights="random"))
    assert folder is None
    assert sum(p.numel() for p in transformer.parameters()) == pytest.approx(3.88e9, rel=0.01)
    assert len(transformer.transformer_blocks) == 5 and len(transformer.single_transformer_blocks) == 20
    assert transformer.config.joint_attention_dim == 3 * 2560  # Qwen3-4B layers 9/18/27 stacked
    scale = 2 ** (len(vae.config.block_out_channels) - 1) * vae.config.patch_size[0]
    assert (512 // scale, vae.config.latent_channels * 4) == (32, 128)  # 128 × 32 × 32 latents at 512²


def test_damaged_prompt_states_are_refused_naming_the_cache(tmp_path):
    from rdmx.files import IntegrityError

    first = build(tmp_path)
    path = first.states.path
    states = path / "states.npy"
    blob = bytearray(states.read_bytes())
    blob[-3] ^= 0x40  # a bit of the last stored row
    states.write_bytes(bytes(blob))
    again = build(tmp_path)  # opening verifies the manifest and the small files only
    again.states.rows(torch.tensor([0]))  # an intact row
    last = int(again.states.index.argmax())
    with pytest.raises(IntegrityError, match=r"states\.npy: row \d+ does not match its checksum.*rm -r"):
        again.states.rows(torch.tensor([last]))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["describes"]["ctx_len"] = 10
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="manifest.json: content does not match its checksum"):
        build(tmp_path)
