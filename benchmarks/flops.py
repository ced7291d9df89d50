"""FLOP counts of the measured paths, from the model's shape and the real (unpadded) token counts.

Model FLOPs (what the path must compute, as MFU counts them: padding, recomputation and
elementwise work are not counted), a multiply-add being 2 FLOPs.
"""

from collections.abc import Sequence

# Dense bfloat16 peaks (TFLOP/s, without sparsity) from the vendors' data sheets, by a name
# fragment of `torch.cuda.get_device_name()`.
GPU_BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def llm_forward_flops(text_config, sequence_lengths: Sequence[int], past_lengths: Sequence[int] | None = None,
                      backward_to_inputs: bool = False, answer_rows: int = 2) -> int:
    """Matmul FLOPs of a Llama-family decoder over `sequence_lengths` real tokens per row.

    With hidden size h, MLP size f, L layers, q = heads * head_dim, kv = kv_heads * head_dim:

    - projections, per token: `L * 2 * (h*q + 2*h*kv + q*h + 3*h*f)` (q, k, v, o; gate, up, down);
    - causal attention, per row of s new tokens after p cached ones: `L * 4 * q * (s*p + s*(s+1)/2)`
      (`Q K^T` and `P V`, each query against its own and earlier keys only);
    - LM head: `2 * h * answer_rows` per row (the last position's "Yes" and "No" rows; no
      full-vocabulary logits are computed).

    `backward_to_inputs=True` adds the backward pass down to the input embeddings with frozen
    weights (step 2; step 1 too, LoRA's own weight gradients being < 0.1% of it): the input
    gradient of every projection (1x the projections) and of the attention core (`dP`, `dV`,
    `dQ`, `dK`: 2x the attention). LoRA's extra matmuls (rank r: `4*r*(h+q)` per token and layer
    for q_proj, v_proj) and the embedding lookups are not counted.
    """
    h, f, layers = text_config.hidden_size, text_config.intermediate_size, text_config.num_hidden_layers
    head_dim = getattr(text_config, "head_dim", None) or h // text_config.num_attention_heads
    q = text_config.num_attention_heads * head_dim
    kv = text_config.num_key_value_heads * head_dim
    past_lengths = past_lengths or [0] * len(sequence_lengths)
    tokens = sum(sequence_lengths)
    key_pairs = sum(s * p + s * (s + 1) // 2 for s, p in zip(sequence_lengths, past_lengths))
    projections = layers * 2 * (h * q + 2 * h * kv + q * h + 3 * h * f) * tokens
    attention = layers * 4 * q * key_pairs
    if backward_to_inputs:
        projections, attention = 2 * projections, 3 * attention
    return projections + attention + 2 * h * answer_rows * len(sequence_lengths)


def gru_flops(input_size: int, hidden_size: int, steps: int, trained: bool = False) -> int:
    """Matmul FLOPs of a one-layer GRU over `steps` (all rows' real steps together):
    `2 * 3 * (input_size*hidden_size + hidden_size**2)` per step (three gates, input and
    recurrent matmuls); x3 when its weights are trained (forward, input and weight gradients)."""
    forward = 2 * 3 * (input_size * hidden_size + hidden_size * hidden_size) * steps
    return 3 * forward if trained else forward


def mfu(flops: int, seconds: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: `flops / seconds` as a fraction of `peak_flops` (FLOP/s)."""
    if not peak_flops or seconds <= 0:
        return None
    return flops / seconds / peak_flops


def history_encoder_flops(encoder, token_lengths: Sequence[int], trained: bool = False) -> int:
    """Matmul FLOPs of the UHEM over rows of `token_lengths` history tokens: `gru_flops` over all
    real steps, plus its output projection (if any) once per row; x3 when trained."""
    flops = gru_flops(encoder.gru.input_size, encoder.gru.hidden_size, sum(token_lengths))
    if encoder.output_projection is not None:
        flops += 2 * encoder.output_projection.weight.numel() * sum(1 for length in token_lengths if length)
    return 3 * flops if trained else flops
