"""GGUF files: SmolLM2-135M (Q4_1/Q8_0) loads, tokenizes and generates as transformers' own GGUF
loading does; tiny written files pin the name mapping, the Q/K un-permutation and the errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gguf
import jax
import numpy as np
import pytest
import torch
import transformers
from tokenizers import pre_tokenizers

from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_decoding import greedy_generate
from jaxprompt.weights.gguf import open_gguf
from jaxprompt.weights.gguf_tokenizer import gguf_tokenizer
from jaxprompt.weights.llama_loader import load_llama
from tests.assets import smollm2_gguf

# Tiny llama for written files: 2 layers, 4 heads / 2 KV heads of 16, so Q and K permute differently.
TINY = dict(vocab=64, hidden=64, mlp=128, layers=2, heads=4, kv_heads=2, head_dim=16)


@pytest.fixture(scope="module")
def path() -> Path:
  return smollm2_gguf()


@pytest.fixture(scope="module")
def reference(path):
  """transformers' own GGUF loading of the same file, in float32."""
  with pytest.MonkeyPatch.context() as patch:
    # transformers rebuilds gguf's (pure) tensor-name map once per module, ~400 times; memoising it
    # saves seconds and changes nothing it computes.
    patch.setattr(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
  return model.eval()


@pytest.fixture(scope="module")
def reference_tokenizer(path):
  return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def tokenizer(path):
  return gguf_tokenizer(path)


@pytest.fixture(scope="module")
def loaded(path):
  return load_llama(str(path), param_dtype="float32", dtype="float32")


@pytest.fixture(scope="module")
def sst2(shared_data) -> list[str]:
  lines = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()[1:]
  return [line.split("\t")[0] for line in lines]


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  length = max(map(len, rows))
  ids = np.array([[pad_id] * (length - len(r)) + r for r in rows], np.int32)
  mask = np.array([[False] * (length - len(r)) + [True] * len(r) for r in rows])
  return ids, mask


def _reference_inputs(ids: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
  # Left padding: each token is positioned by the valid tokens before it, as our model does.
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return dict(input_ids=torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask.astype(np.int64)),
              position_ids=torch.from_numpy(positions))


# ---------------------------------------------------------------------------------------------
# SmolLM2 against transformers.


def test_config_matches_transformers(loaded, reference):
  config, _ = loaded
  ref = reference.config
  assert (config.vocab_size, config.hidden_size, config.intermediate_size, config.num_layers) == (
      ref.vocab_size, ref.hidden_size, ref.intermediate_size, ref.num_hidden_layers)
  assert (config.num_heads, config.num_kv_heads, config.head_dim) == (
      ref.num_attention_heads, ref.num_key_value_heads, ref.head_dim)
  assert config.rms_norm_eps == ref.rms_norm_eps
  assert config.rope_theta == ref.rope_parameters["rope_theta"] == 100000.0
  assert config.tie_word_embeddings and ref.tie_word_embeddings
  assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 2)


def test_weights_equal_transformers(loaded, reference):
  """Dequantised exactly as transformers does; q_proj/k_proj check the un-permutation (K by KV heads)."""
  config, params = loaded
  layer, d = 7, config.hidden_size
  ours = params["params"]["decoder"]["layers"]
  ref = reference.model
  hf = ref.layers[layer]
  pairs = {
      "embed (Q8_0)": (params["params"]["token_embedder"]["embedding"], ref.embed_tokens.weight),
      "q_proj": (ours["attention"]["query"]["kernel"][layer].reshape(d, -1).T, hf.self_attn.q_proj.weight),
      "k_proj": (ours["attention"]["key"]["kernel"][layer].reshape(d, -1).T, hf.self_attn.k_proj.weight),
      "down_proj": (ours["mlp"]["down"]["kernel"][layer].T, hf.mlp.down_proj.weight),
      "post_attention_layernorm": (ours["pre_mlp_norm"]["scale"][layer], hf.post_attention_layernorm.weight),
      "norm": (params["params"]["decoder"]["final_norm"]["scale"], ref.norm.weight),
  }
  for name, (got, want) in pairs.items():
    np.testing.assert_array_equal(np.asarray(got), want.detach().numpy(), err_msg=name)


def test_logits_match_transformers(loaded, reference, tokenizer, sst2):
  config, params = loaded
  ids, mask = _left_pad(tokenizer.encode_batch(sst2[:4]), tokenizer.pad_id)
  assert not mask.all()  # the batch really is padded
  ours = jax.jit(functools.partial(Llama(config).apply, method=Llama.forward_logits))(params, ids, mask)
  with torch.no_grad():
    ref = reference(**_reference_inputs(ids, mask)).logits.numpy()
  # Float32's noise floor on logits up to ~33 depends on the CPU's kernels: measured 1.1e-4 from
  # transformers' on the AVX-512 machines (Intel Xeon, Zen 4; transformers' own float32 logits are
  # 1e-4 from its float64 ones there) and 3.4e-4 on an AVX2 Zen 3 (ours 3.7e-4 from transformers'
  # float64 logits there, with or without the tests' XLA flags, its own float32 ones 9.7e-5), ~90
  # float32 ulps of the largest logits; a wrong weight or position moves them by orders of magnitude more.
  np.testing.assert_allclose(np.asarray(ours)[mask], ref[mask], rtol=0, atol=5e-4)


def test_greedy_generation_matches_transformers(loaded, reference, tokenizer):
  config, params = loaded
  prompts = [
      "Review: a gripping, beautifully acted film. Sentiment (positive or negative):",
      "Review: dull. Sentiment (positive or negative):",
      "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
  ]
  ids, mask = _left_pad(tokenizer.encode_batch(prompts), tokenizer.pad_id)
  new = 12
  generate = jax.jit(greedy_generate, static_argnums=(0, 4), static_argnames=("eos_id", "pad_id"))
  ours = np.asarray(generate(Llama(config), params, ids, mask, new, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id))
  with torch.no_grad():
    inputs = _reference_inputs(ids, mask)
    del inputs["position_ids"]  # generate derives them from the attention mask
    ref = reference.generate(**inputs, max_new_tokens=new, do_sample=False, num_beams=1,
                             eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)[:, ids.shape[1]:].numpy()
  ref = np.pad(ref, ((0, 0), (0, new - ref.shape[1])), constant_values=tokenizer.pad_id)  # stops early when all end
  np.testing.assert_array_equal(ours, ref)


def _tokenizer_texts(sst2: list[str]) -> list[str]:
  return sst2[:36] + [
      "In 2023, 1,234,567 people paid $12.50 (about 3x more) on 07/04.",
      "Version 3.11.7 was released 2023-12-04; pi ~ 3.14159",
      "naïve café — Ünïcödé façade, Straße, 東京タワー, русский, 😀👍🏽",
      "multiple   spaces\tand\ttabs\n\nand  newlines  ",
      "   leading and trailing spaces   ",
      "<|im_start|>user\nhi<|im_end|>",
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nRate: great!<|im_end|>\n<|im_start|>assistant\n",
      "text<|endoftext|>more<repo_name>x<file_sep>y",
      "I'm sure they'll say we'd've LOVED it, isn't it?",
      "def f(x):\n    return x ** 2  # square",
      "e-mail: someone@example.com, url: https://example.com/a?b=c&d=e",
      # Non-ASCII numerals after a space: where the pre-tokenizer regex shows.
      "¿Qué? ¡Sí! «quoted» “curly” ‘single’ … ½ cup, x ² ①② ٣٤",
      "",
      " ",
  ]


def test_tokenizer_matches_transformers(tokenizer, reference_tokenizer, sst2):
  # The same pipeline: model, vocabulary, merges, pre-tokenizer, decoder, added tokens, template.
  assert json.loads(tokenizer.tokenizer.to_str()) == json.loads(reference_tokenizer.backend_tokenizer.to_str())
  texts = _tokenizer_texts(sst2)
  assert len(texts) == 50
  for text in texts:
    assert tokenizer.encode(text) == reference_tokenizer(text, add_special_tokens=False)["input_ids"], text
    assert tokenizer.encode(text, add_special_tokens=True) == reference_tokenizer(text)["input_ids"], text
  assert tokenizer.encode("<|im_start|>user\nhi<|im_end|>") == [1, 4093, 198, 6004, 2]
  assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (
      reference_tokenizer.bos_token_id, reference_tokenizer.eos_token_id, reference_tokenizer.pad_token_id) == (1, 2, 2)
  assert tokenizer.token_to_id(tokenizer.special.unk) == reference_tokenizer.unk_token_id == 0
  assert tokenizer.vocab_size == len(reference_tokenizer) == 49152


def test_decode_round_trips(tokenizer, reference_tokenizer, sst2):
  for text in _tokenizer_texts(sst2):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.decode(ids) == reference_tokenizer.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------
# Tiny written files.


def _llama_cpp_permute(w_OxI: np.ndarray, num_heads: int) -> np.ndarray:
  """What llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute) does to q_proj/k_proj rows."""
  half = w_OxI.shape[0] // num_heads // 2
  return w_OxI.reshape(num_heads, 2, half, *w_OxI.shape[1:]).swapaxes(1, 2).reshape(w_OxI.shape)


def _write_tiny_gguf(
    path: Path, arch: str = "llama", overrides: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
  """A tiny Llama written as llama.cpp's converter would; returns the HF weights reading it must give."""
  t = TINY
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  F16, Q8_0 = gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0
  expected, tensors = {}, {}

  def add(gguf_name, hf_name, w, qtype=None, permute_heads=None):
    data = w if qtype is None else gguf.quants.quantize(w, qtype)
    expected[hf_name] = data if qtype is None else gguf.quants.dequantize(data, qtype)
    # Rows are quantised independently, so permuting before or after quantising is the same.
    tensors[gguf_name] = (data if permute_heads is None else _llama_cpp_permute(data, permute_heads), qtype)

  add("token_embd.weight", "model.embed_tokens.weight", normal(t["vocab"], t["hidden"]), F16)
  add("output_norm.weight", "model.norm.weight", normal(t["hidden"]))
  add("output.weight", "lm_head.weight", normal(t["vocab"], t["hidden"]), Q8_0)
  q_dim, kv_dim = t["heads"] * t["head_dim"], t["kv_heads"] * t["head_dim"]
  for i in range(t["layers"]):
    blk, hf = f"blk.{i}.", f"model.layers.{i}."
    add(blk + "attn_q.weight", hf + "self_attn.q_proj.weight", normal(q_dim, t["hidden"]), Q8_0, t["heads"])
    add(blk + "attn_k.weight", hf + "self_attn.k_proj.weight", normal(kv_dim, t["hidden"]), None, t["kv_heads"])
    add(blk + "attn_v.weight", hf + "self_attn.v_proj.weight", normal(kv_dim, t["hidden"]), Q8_0)
    add(blk + "attn_output.weight", hf + "self_attn.o_proj.weight", normal(t["hidden"], q_dim), Q8_0)
    add(blk + "ffn_gate.weight", hf + "mlp.gate_proj.weight", normal(t["mlp"], t["hidden"]), Q8_0)
    add(blk + "ffn_up.weight", hf + "mlp.up_proj.weight", normal(t["mlp"], t["hidden"]), Q8_0)
    add(blk + "ffn_down.weight", hf + "mlp.down_proj.weight", normal(t["hidden"], t["mlp"]), Q8_0)
    add(blk + "attn_norm.weight", hf + "input_layernorm.weight", normal(t["hidden"]))
    add(blk + "ffn_norm.weight", hf + "post_attention_layernorm.weight", normal(t["hidden"]))
  tensors.update({name: (w, None) for name, w in (overrides or {}).items()})

  writer = gguf.GGUFWriter(path, arch)
  writer.add_block_count(t["layers"])
  writer.add_context_length(512)
  writer.add_embedding_length(t["hidden"])
  writer.add_feed_forward_length(t["mlp"])
  writer.add_head_count(t["heads"])
  writer.add_head_count_kv(t["kv_heads"])
  writer.add_rope_dimension_count(t["head_dim"])
  writer.add_rope_freq_base(5e5)
  writer.add_layer_norm_rms_eps(1e-5)
  writer.add_vocab_size(t["vocab"])
  writer.add_tokenizer_model("llama")  # SentencePiece: what gguf_tokenizer does not build
  writer.add_uint32("tokenizer.ggml.bos_token_id", 1)
  for name, (data, qtype) in tensors.items():
    writer.add_tensor(name, data, raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return expected


def test_tiny_file_reads_as_hf_llama(tmp_path):
  """HF names and [out, in] shapes; Q/K rows back in HF order; F16/Q8_0 dequantised to float32."""
  expected = _write_tiny_gguf(tmp_path / "tiny.gguf")
  source, hf_config = open_gguf(tmp_path / "tiny.gguf")
  assert set(source) == set(expected)
  for name, want in expected.items():
    got = source[name].read()
    assert (source[name].shape, got.dtype, source[name].dtype) == (want.shape, np.float32, np.float32), name
    np.testing.assert_array_equal(got, want, err_msg=name)
  t = TINY
  assert hf_config == {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": t["vocab"],
      "hidden_size": t["hidden"], "intermediate_size": t["mlp"], "num_hidden_layers": t["layers"],
      "num_attention_heads": t["heads"], "num_key_value_heads": t["kv_heads"], "head_dim": t["head_dim"],
      "rms_norm_eps": pytest.approx(1e-5), "rope_theta": 5e5, "max_position_embeddings": 512,
      "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
      "bos_token_id": 1, "eos_token_id": None, "pad_token_id": None,
  }
  config, params = load_llama(str(tmp_path / "tiny.gguf"), param_dtype="float32")
  assert not config.tie_word_embeddings
  np.testing.assert_array_equal(params["params"]["lm_head"]["kernel"], expected["lm_head.weight"].T)


def _write_tiny_tokenizer_gguf(path: Path) -> list[str]:
  """A Llama-3-style byte-level vocabulary: llama-bpe split, BOS added, a user-defined <think>."""
  byte_chars = pre_tokenizers.ByteLevel.alphabet()
  tokens = ["<|begin_of_text|>", "<|end_of_text|>", "<think>", *sorted(byte_chars), "Ġt", "he", "Ġthe", "in", "12"]
  writer = gguf.GGUFWriter(path, "llama")
  writer.add_block_count(1)
  writer.add_embedding_length(8)
  writer.add_feed_forward_length(8)
  writer.add_head_count(2)
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre("llama-bpe")
  writer.add_token_list(tokens)
  writer.add_token_types([3, 3, 4] + [1] * (len(tokens) - 3))  # control, control, user-defined, normal...
  writer.add_token_merges(["Ġ t", "h e", "Ġt he", "i n", "1 2"])
  writer.add_bos_token_id(0)
  writer.add_eos_token_id(1)
  writer.add_add_bos_token(True)
  writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return tokens


def test_tiny_tokenizer_matches_transformers(tmp_path):
  """The paths SmolLM2 does not take: a named split regex, user-defined tokens, an added BOS."""
  tokens = _write_tiny_tokenizer_gguf(tmp_path / "tok.gguf")
  ours = gguf_tokenizer(tmp_path / "tok.gguf")
  ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="tok.gguf")
  ours_json, ref_json = json.loads(ours.tokenizer.to_str()), json.loads(ref.backend_tokenizer.to_str())
  # transformers also adds GPT2Tokenizer's default "<|endoftext|>", past the vocabulary; we do not.
  extra = ref_json["added_tokens"].pop()
  assert (extra["id"], extra["content"]) == (len(tokens), "<|endoftext|>")
  assert ours_json == ref_json
  for text in ("the 12345 in<think>x</think> the<|end_of_text|>", "I'm   THE\n\n 7 thin"):
    assert ours.encode(text) == ref(text, add_special_tokens=False)["input_ids"]
    assert ours.encode(text, add_special_tokens=True) == ref(text)["input_ids"] == [0, *ours.encode(text)]
  assert ours.encode("<think>") == [2]
  assert ours.decode(ours.encode("the<think>x<|end_of_text|>")) == "the<think>x"


def test_non_llama_architecture_fails(tmp_path):
  _write_tiny_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
  with pytest.raises(ValueError, match=r"gpt2\.gguf: general\.architecture='gpt2' is not supported"):
    open_gguf(tmp_path / "gpt2.gguf")


def test_undequantisable_tensor_fails(tmp_path):
  _write_tiny_gguf(tmp_path / "int.gguf", overrides={"blk.0.extra.weight": np.zeros((4, 32), np.int32)})
  message = r"int\.gguf: tensor 'blk\.0\.extra\.weight' is stored as I32, which gguf .* cannot dequantise"
  with pytest.raises(ValueError, match=message):
    open_gguf(tmp_path / "int.gguf")


def test_unsupported_tokenizer_fails(tmp_path):
  _write_tiny_gguf(tmp_path / "spm.gguf")
  with pytest.raises(ValueError, match=r"spm\.gguf: tokenizer\.ggml\.model='llama' is not supported"):
    gguf_tokenizer(tmp_path / "spm.gguf")


def test_missing_file_fails(tmp_path):
  missing = tmp_path / "absent.gguf"
  for load in (open_gguf, gguf_tokenizer, lambda p: load_llama(str(p))):
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
      load(missing)
