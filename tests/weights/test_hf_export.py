"""export_hf writes what transformers and our loaders both read back: per family, a random transformers
model with odd shapes is loaded, moved as a fine-tune would move it, exported, and reloaded by both."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import traverse_util

from jaxprompt import sharding
from jaxprompt.models.albert import Albert
from jaxprompt.models.bert import Bert
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.models.llama import Llama
from jaxprompt.models.t5 import T5
from jaxprompt.weights import hf_export
from jaxprompt.weights.albert_loader import load_albert
from jaxprompt.weights.bert_loader import load_bert
from jaxprompt.weights.bert_names import FlatSource
from jaxprompt.weights.llama_loader import load_llama
from jaxprompt.weights.placement import ParamSource
from jaxprompt.weights.t5_loader import load_t5
from tests.models import albert_reference, bert_reference

F32 = dict(param_dtype="float32", dtype="float32")
LENGTHS = [13, 9, 4]


def _away_from_init(model: torch.nn.Module, scale_embeddings: bool) -> torch.nn.Module:
  """The references' recipe: biases and norms off 0 and 1, word embeddings large (tied MLM logits of order 1)."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name.lower():
        p.add_(0.2 * torch.randn_like(p))
      elif scale_embeddings and name.endswith("word_embeddings.weight"):
        p.mul_(50.0)
  return model.eval()


def _bert(variant: bert_reference.Variant) -> Callable[[], torch.nn.Module]:
  def make():
    # 3 heads of 10 (neither H nor K a power of two, H != K), vocabulary and widths all distinct.
    config = variant.config_class(
        vocab_size=101, hidden_size=30, num_hidden_layers=3, num_attention_heads=3, intermediate_size=46,
        max_position_embeddings=40, type_vocab_size=variant.type_vocab_size, pad_token_id=variant.pad,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return _away_from_init(variant.model_class(config), scale_embeddings=True)
  return make


def _albert() -> torch.nn.Module:
  # Two groups over three layers, two layers inside each: every group/inner-layer name is exercised.
  return albert_reference.make_hf(albert_reference.Variant(
      "grouped-mlm", transformers.AlbertForMaskedLM, num_hidden_groups=2, inner_group_num=2))


def _llama(tied: bool, rope_scaling: dict | None) -> Callable[[], torch.nn.Module]:
  def make():
    config = transformers.LlamaConfig(
        vocab_size=131, hidden_size=42, intermediate_size=50, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=2, head_dim=6, rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=tied,
        rope_scaling=rope_scaling, max_position_embeddings=64, initializer_range=0.2,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return _away_from_init(transformers.LlamaForCausalLM(config), scale_embeddings=False)
  return make


def _t5() -> torch.nn.Module:
  # v1.1: gated GELU, its own lm_head; 3 heads of 7 (H*K = 21 != d_model = 30); 2 + 3 layers.
  config = transformers.T5Config(
      vocab_size=131, d_model=30, d_kv=7, d_ff=44, num_heads=3, num_layers=2, num_decoder_layers=3,
      relative_attention_num_buckets=16, relative_attention_max_distance=12, feed_forward_proj="gated-gelu",
      tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  torch.manual_seed(0)
  model = _away_from_init(transformers.T5ForConditionalGeneration(config), scale_embeddings=False)
  model.lm_head.weight = torch.nn.Parameter(torch.randn(131, 30) * 30**-0.5)  # transformers 5 ties it otherwise
  return model


def _batch(vocab: int, left_padded: bool, segments: int, pad: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(1)
  valid = np.arange(13)[None] < np.asarray(LENGTHS)[:, None]
  if left_padded:
    valid = np.ascontiguousarray(valid[:, ::-1])
  ids = np.where(valid, rng.integers(3, vocab, valid.shape), pad).astype(np.int32)  # RoBERTa's positions skip pad ids
  dec = np.where(valid[:, :6], rng.integers(2, vocab, (3, 6)), 0).astype(np.int32)
  dec[:, 0] = 0
  types = ((np.arange(13)[None] >= np.asarray(LENGTHS)[:, None] // 2) & valid & (segments > 1)).astype(np.int32)
  return dict(ids=ids, mask=valid, types=types, dec=dec, dec_mask=valid[:, :6])


def _torch(a: np.ndarray) -> torch.Tensor:
  return torch.tensor(a, dtype=torch.long)


def _encoder_ours(model_class):
  def ours(config, params, b):
    model = model_class(config)
    out = model.apply(params, b["ids"], b["mask"], b["types"])
    return model.apply(params, out.hidden_BxTxD, method=model_class.mlm_logits), b["mask"] | True  # every slot
  return ours


def _pooled_ours(config, params, b):
  out = Bert(config).apply(params, b["ids"], b["mask"], b["types"])
  states = jnp.concatenate([out.hidden_BxTxD, out.pooled_BxD[:, None]], axis=1)  # the pooled output as a last slot
  return states, jnp.ones(states.shape[:2], bool)


def _pooled_theirs(model, b):
  out = model(input_ids=_torch(b["ids"]), attention_mask=_torch(b["mask"]), token_type_ids=_torch(b["types"]))
  return torch.cat([out.last_hidden_state, out.pooler_output[:, None]], dim=1)


def _encoder_theirs(model, b):
  return model(input_ids=_torch(b["ids"]), attention_mask=_torch(b["mask"]), token_type_ids=_torch(b["types"])).logits


def _llama_ours(config, params, b):
  return Llama(config).apply(params, b["ids"], b["mask"], method=Llama.forward_logits), b["mask"]


def _llama_theirs(model, b):
  positions = np.maximum(np.cumsum(b["mask"], axis=1) - 1, 0)
  return model(input_ids=_torch(b["ids"]), attention_mask=_torch(b["mask"]), position_ids=_torch(positions)).logits


def _t5_ours(config, params, b):
  return T5(config).apply(params, b["ids"], b["mask"], b["dec"], b["dec_mask"]), b["dec_mask"]


def _t5_theirs(model, b):
  return model(input_ids=_torch(b["ids"]), attention_mask=_torch(b["mask"]), decoder_input_ids=_torch(b["dec"]),
               decoder_attention_mask=_torch(b["dec_mask"])).logits


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  make_hf: Callable[[], torch.nn.Module]
  load: Callable[..., tuple]
  auto_class: type
  ours: Callable  # (config, params, batch) -> (logits, which slots to compare)
  theirs: Callable  # (transformers model, batch) -> logits
  left_padded: bool = False
  tied: bool | None = True  # whether transformers' output embedding is its input embedding (None: it has none)


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}
CASES = [
    Case("bert-mlm", _bert(bert_reference.BERT_MLM), load_bert, transformers.AutoModelForMaskedLM,
         _encoder_ours(Bert), _encoder_theirs),
    Case("bert-pooler", _bert(bert_reference.BERT), load_bert, transformers.AutoModel, _pooled_ours, _pooled_theirs,
         tied=None),
    Case("roberta-mlm", _bert(bert_reference.ROBERTA_MLM), load_bert, transformers.AutoModelForMaskedLM,
         _encoder_ours(Bert), _encoder_theirs),
    Case("albert-mlm", _albert, load_albert, transformers.AutoModelForMaskedLM, _encoder_ours(Albert), _encoder_theirs),
    Case("llama-untied-llama3-rope", _llama(False, LLAMA3), load_llama, transformers.AutoModelForCausalLM,
         _llama_ours, _llama_theirs, left_padded=True, tied=False),
    Case("llama-tied", _llama(True, None), load_llama, transformers.AutoModelForCausalLM, _llama_ours, _llama_theirs,
         left_padded=True),
    Case("t5-v1.1", _t5, load_t5, transformers.T5ForConditionalGeneration, _t5_ours, _t5_theirs, tied=False),
]


def _fine_tuned(params: dict, seed: int = 0) -> dict:
  """Every param moved by noise of ~5% of its spread (norm scales and biases included)."""
  flat = traverse_util.flatten_dict(params["params"], sep="/")
  rng = np.random.default_rng(seed)
  moved = {p: v + (0.05 * float(np.std(v)) + 1e-3) * rng.standard_normal(v.shape).astype(np.float32)
           for p, v in flat.items()}
  return {"params": traverse_util.unflatten_dict({p: jnp.asarray(v) for p, v in moved.items()}, sep="/")}


def _assert_same_params(got: dict, want: dict) -> None:
  got, want = (traverse_util.flatten_dict(t["params"], sep="/") for t in (got, want))
  assert set(got) == set(want)
  for path in want:
    np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(want[path]), err_msg=path)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def exported(request, tmp_path_factory):
  """(case, original HF model, its save_pretrained dir, our config, fine-tuned params, export dir)."""
  case = request.param
  hf_model = case.make_hf()
  original = tmp_path_factory.mktemp(f"{case.name}-hf")
  hf_model.save_pretrained(original)
  config, params = case.load(str(original), **F32)
  tuned = _fine_tuned(params)
  directory = hf_export.export_hf(config, tuned, tmp_path_factory.mktemp(f"{case.name}-export"))
  return case, hf_model, original, config, tuned, directory


def test_transformers_loads_the_export_whole_and_reproduces_our_logits(exported):
  case, hf_model, original, config, tuned, directory = exported
  reloaded, info = case.auto_class.from_pretrained(directory, output_loading_info=True)
  assert {k: set(v) for k, v in info.items()} == {
      "missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": set()}
  assert type(reloaded) is type(hf_model) and reloaded.dtype == torch.float32
  # Exactly the tensors transformers' own save_pretrained writes: tied copies left out alike.
  assert set(safetensors.numpy.load_file(directory / "model.safetensors")) == set(
      safetensors.numpy.load_file(original / "model.safetensors"))
  out, inp = reloaded.get_output_embeddings(), reloaded.get_input_embeddings()
  assert (None if out is None else out.weight.data_ptr() == inp.weight.data_ptr()) == case.tied

  batch = _batch(config.vocab_size, case.left_padded, getattr(config, "type_vocab_size", 1), config.pad_token_id or 0)
  ours, compared = jax.jit(case.ours, static_argnums=0)(config, tuned, batch)
  with torch.no_grad():
    theirs, before = case.theirs(reloaded.eval(), batch).numpy(), case.theirs(hf_model, batch).numpy()
  np.testing.assert_allclose(np.asarray(ours)[compared], theirs[compared], atol=1e-4, rtol=0)
  assert np.abs(theirs).max() > 1.0  # not a comparison of near-zero tensors
  assert np.abs(theirs - before)[compared].max() > 1e-2  # the fine-tune is what was exported


def test_our_loader_reads_the_export_back_exactly(exported):
  case, _, _, config, tuned, directory = exported
  reread_config, reread = case.load(str(directory), **F32)
  assert reread_config == config  # config.json round-trips through from_hf
  _assert_same_params(reread, tuned)


@pytest.mark.parametrize("make_hf,load", [(_t5, load_t5), (_bert(bert_reference.BERT_MLM), load_bert)],
                         ids=["t5", "bert"])
def test_scanned_and_unrolled_params_export_the_same_bytes(tmp_path, make_hf, load):
  make_hf().save_pretrained(tmp_path / "hf")
  files = []
  for scan_layers in (True, False):
    config, params = load(str(tmp_path / "hf"), scan_layers=scan_layers, **F32)
    out = hf_export.export_hf(config, params, tmp_path / f"scan-{scan_layers}")
    files.append(((out / "model.safetensors").read_bytes(), (out / "config.json").read_text()))
  assert files[0] == files[1]


def test_sharded_params_export_the_same_bytes_and_bf16_reads_back_rounded(tmp_path):
  bert_reference.make_hf(bert_reference.BERT_MLM).save_pretrained(tmp_path / "hf")  # shapes the mesh divides
  mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  config, sharded = load_bert(str(tmp_path / "hf"), mesh=mesh, **F32)
  kernel = sharded["params"]["encoder"]["layers"]["mlp"]["wi"]["kernel"]
  assert not kernel.sharding.is_fully_replicated and kernel.addressable_shards[0].data.shape != kernel.shape
  _, local = load_bert(str(tmp_path / "hf"), **F32)
  a = hf_export.export_hf(config, sharded, tmp_path / "sharded")
  b = hf_export.export_hf(config, jax.tree.map(np.asarray, local), tmp_path / "numpy")
  assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()

  half = hf_export.export_hf(config, sharded, tmp_path / "bf16", dtype="bfloat16")
  assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"
  _, reread = load_bert(str(half), param_dtype="bfloat16", dtype="float32")
  _assert_same_params(reread, jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16), local))
  model = transformers.AutoModelForMaskedLM.from_pretrained(half)
  assert model.dtype == torch.bfloat16  # transformers 5 loads in the dtype config.json names


LAYOUT_SHAPES = {"plain": (6, 10), "in_heads": (6, 2, 5), "heads_out": (2, 5, 6)}  # [D, H, K]: all distinct


@pytest.mark.parametrize("source", [
    ParamSource(("w",)), ParamSource(("w",), transposed=True),
    ParamSource(("w",), "in_heads"), ParamSource(("w",), "in_heads", transposed=True),
    ParamSource(("w",), "heads_out", transposed=True), ParamSource(("a", "b"), "in_heads", True, stacked=True),
    ParamSource(("a", "b"), "heads_out", True, stacked=True), FlatSource(("b",)), FlatSource(("a", "b"), stacked=True),
], ids=lambda s: f"{type(s).__name__}-{s.layout}-{'T' if s.transposed else 'N'}-{'stacked' if s.stacked else 'one'}")
def test_to_file_layout_inverts_convert(source):
  shape = (2, 5) if isinstance(source, FlatSource) else LAYOUT_SHAPES[source.layout]
  param_shape = (2, *shape) if source.stacked else shape
  param = np.random.default_rng(0).standard_normal(param_shape).astype(np.float32)
  for value in list(param) if source.stacked else [param]:
    tensor = hf_export.to_file_layout(source, value, param_shape)
    assert tensor.shape == source.file_shape(param_shape)
    np.testing.assert_array_equal(source.convert(tensor, param_shape), value)


def test_configs_hugging_face_cannot_express_fail_before_writing(tmp_path):
  roberta_pad = BertConfig(vocab_size=101, hidden_size=30, num_heads=3, pad_token_id=1, position_offset=5)
  with pytest.raises(ValueError, match="position_offset: ours 5, read back 2"):
    hf_export.hf_config(roberta_pad)
  bert_relu_head = BertConfig(has_mlm_head=True, mlm_activation="relu")  # BERT's head uses hidden_act
  with pytest.raises(ValueError, match="mlm_activation"):
    hf_export.export_hf(bert_relu_head, {}, tmp_path / "never")
  assert not (tmp_path / "never").exists()


def test_params_that_do_not_fit_fail_with_the_paths_and_nothing_is_written(tmp_path):
  _bert(bert_reference.BERT_MLM)().save_pretrained(tmp_path / "hf")
  config, params = load_bert(str(tmp_path / "hf"), **F32)
  flat = traverse_util.flatten_dict(params["params"], sep="/")
  del flat["mlm_head/bias"]
  flat["prompt/embedding"] = np.zeros((4, 30))
  with pytest.raises(ValueError, match=r"mlm_head/bias \(101,\) is missing(.|\n)*prompt/embedding \(4, 30\) is not"):
    hf_export.export_hf(config, traverse_util.unflatten_dict(flat, sep="/"), tmp_path / "out")
  assert not (tmp_path / "out" / "model.safetensors").exists()


def test_tokenizer_files_are_copied_and_other_weights_refused(tmp_path):
  _bert(bert_reference.ROBERTA_MLM)().save_pretrained(tmp_path / "hf")
  config, params = load_bert(str(tmp_path / "hf"), **F32)
  (tmp_path / "vocab.json").write_text('{"a": 0}')
  out = hf_export.export_hf(config, params, tmp_path / "out", tokenizer_files=[tmp_path / "vocab.json"])
  assert (out / "vocab.json").read_text() == '{"a": 0}'
  assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
  (out / "pytorch_model.bin").write_bytes(b"")  # the loaders would read this one instead
  with pytest.raises(FileExistsError, match="pytorch_model.bin"):
    hf_export.export_hf(config, params, out)


def test_llama_extra_keys_are_written_under_ours(tmp_path):
  _llama(False, None)().save_pretrained(tmp_path / "hf")
  config, params = load_llama(str(tmp_path / "hf"), **F32)
  out = hf_export.export_hf(config, params, tmp_path / "out", hf_extra={"max_position_embeddings": 64, "vocab_size": 1})
  written = json.loads((out / "config.json").read_text())
  assert (written["max_position_embeddings"], written["vocab_size"]) == (64, 131)
  assert transformers.AutoConfig.from_pretrained(out).max_position_embeddings == 64
