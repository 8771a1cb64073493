"""The BERT encoder (Devlin et al. 2019), forward and backward by hand.

Attribute names reproduce the Hugging Face module tree, so ``named_parameters()`` yields the keys of a
Hugging Face ``BertModel`` state dict (``embeddings.word_embeddings.weight``, ...,
``encoder.layer.3.output.LayerNorm.bias``, ``pooler.dense.weight``).

Shapes: B batch, T tokens, H hidden, A heads, D = H / A head size, I intermediate, V vocabulary.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from minibert import functional as F
from minibert import kernels
from minibert.checkpoint import PreTrainedModel
from minibert.config import BertConfig
from minibert.nn import Dropout, Embedding, LayerNorm, Linear, Module
from minibert.validation import generator


@dataclasses.dataclass(frozen=True)
class Unpadded:
    """Where the N real tokens of a padded (B, T) batch go when only they are computed
    ("unpadding", as in MosaicBERT and ModernBERT).

    Every token-wise operation (embeddings, linear layers, GELU, layer norm, dropout, residuals)
    treats each token on its own, so it can run on the (N, H) rows of the real tokens instead of the
    (B, T, H) grid, N = attention_mask.sum(). Only attention mixes tokens, and only within a
    sequence: the rows are ordered by sequence length (then batch index), so the c sequences of one
    length n are consecutive rows and attend as one (c, A, n, n) batch with no mask. The cost is
    indexing: one gather of the inputs (B T -> N) and one scatter of the outputs back to (B, T, H),
    zeros at padding.

        index   (N,) flat position b * T + t of each row's token
        groups  (start row, count c, length n) per distinct non-zero sequence length, in row order
        shape   (B, T)
    """
    index: np.ndarray
    groups: tuple
    shape: tuple

    @classmethod
    def from_mask(cls, attention_mask: np.ndarray) -> "Unpadded":
        B, T = attention_mask.shape
        real = attention_mask.astype(bool)
        lengths = real.sum(axis=1)
        order = np.argsort(lengths, kind="stable")                     # shortest first, ties by b
        rank, t = np.nonzero(real[order])                     # row-major: sequence by sequence
        index = order[rank] * T + t
        values, counts = np.unique(lengths[order], return_counts=True)
        starts = np.concatenate([[0], np.cumsum(values * counts)[:-1]])
        groups = tuple((int(s), int(c), int(n)) for s, c, n in zip(starts, counts, values) if n > 0)
        return cls(index, groups, (B, T))

    def query_positions(self, rows: np.ndarray) -> tuple:
        """For attention with queries at the sorted ``rows`` only: per group, for each of its c
        sequences, the positions 0 .. n-1 of its rows among ``rows`` (``queries`` of
        ``functional.unpadded_attention_forward``; the rows are consecutive per sequence, so the
        queries come out in the order of ``rows``)."""
        out = []
        for start, c, n in self.groups:
            bounds = np.searchsorted(rows, start + n * np.arange(c + 1))
            out.append(tuple(rows[bounds[i]:bounds[i + 1]] - (start + i * n) for i in range(c)))
        return tuple(out)

    def gather(self, a: np.ndarray) -> np.ndarray:
        """(B, T, ...) -> (N, ...): the rows of the real tokens."""
        return a.reshape(-1, *a.shape[2:])[self.index]

    def scatter(self, rows: np.ndarray) -> np.ndarray:
        """(N, ...) -> (B, T, ...), zeros at padding: ``gather`` inverted on real positions."""
        return _scatter_rows(rows, self.index, self.shape)

    def scatter_probs(self, probs: tuple) -> np.ndarray:
        """Per-group attention probabilities (c, A, n, n) -> (B, A, T, T), zeros at padded queries
        and keys."""
        B, T = self.shape
        A = probs[0].shape[1] if probs else 1
        out = np.zeros((B, A, T, T), dtype=probs[0].dtype if probs else np.float32)
        for (start, count, n), p in zip(self.groups, probs):
            pos = self.index[start:start + count * n].reshape(count, n)             # b * T + t
            b, t = pos[:, 0] // T, pos % T                                           # (c,), (c, n)
            out[b[:, None, None, None], np.arange(A)[None, :, None, None], t[:, None, :, None],
                t[:, None, None, :]] = p
        return out


class BertEmbeddings(Module):
    """e = LayerNorm(word[ids] + position[t] + token_type[segment]), then dropout.  (B, T) -> (B, T, H)

    The [PAD] row starts at zero as in Hugging Face, but, as in the original BERT, it is an ordinary
    row afterwards: Hugging Face's ``padding_idx`` also withholds the lookup's gradient from it. The two
    agree whenever [PAD] sits only at padded positions (their gradient is zero anyway); they differ when
    MLM's random replacement puts [PAD] inside a sentence.
    """

    def __init__(self, config: BertConfig, rng: np.random.Generator):
        std = config.initializer_range
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, rng, std, config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size, rng, std)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size, rng, std)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob, rng)

    def forward(self, input_ids, token_type_ids, inputs_embeds_delta=None, position_ids=None):
        """``inputs_embeds_delta`` (B, T, H), if given, is added to the word-embedding output before the
        sum: the perturbation of adversarial fine-tuning (FreeLB, SMART).

        Unpadded (see ``Unpadded``): input_ids, token_type_ids and ``position_ids`` are (N,), the
        real tokens only, and the output is (N, H). Without ``position_ids`` the positions are 0 ...
        T-1 of every row, one (T, H) table broadcast over the batch."""
        positions = np.arange(input_ids.shape[1]) if position_ids is None else position_ids
        words = self.word_embeddings.forward(input_ids)                     # (B, T, H) | (N, H)
        if inputs_embeds_delta is not None:
            words = words + inputs_embeds_delta
        position = self.position_embeddings.forward(positions)              # (T, H) | (N, H)
        segments = self.token_type_embeddings.forward(token_type_ids)       # (B, T, H) | (N, H)
        self.cache = position_ids is None
        return self.dropout.forward(self.LayerNorm.forward(words + position + segments))

    def backward(self, dout):
        """The sum fans the gradient out unchanged to its three terms; a position row shared by the
        batch gets the sum of its gradients over B. Returns d(word-embedding output), (B, T, H) or
        (N, H), which is also the gradient of ``inputs_embeds_delta``."""
        broadcast = self.take_cache()
        dsum = self.LayerNorm.backward(self.dropout.backward(dout))         # (B, T, H) | (N, H)
        self.word_embeddings.backward(dsum)
        self.position_embeddings.backward(dsum.sum(axis=0) if broadcast else dsum)
        self.token_type_embeddings.backward(dsum)
        return dsum


class BertSelfAttention(Module):
    """Multi-head scaled dot-product self-attention with an additive padding mask.

    q, k, v = x W_q^T + b_q, ...  (B, T, H), split into A heads of size D -> (B, A, T, D);
    context_a = dropout(softmax(q_a k_a^T / sqrt(D) + mask)) v_a, heads concatenated back to (B, T, H).

    Unpadded, x is (N, H) (the real tokens, see ``Unpadded``) and ``mask_bias`` is the ``Unpadded``
    layout: the rows of the c sequences of length n are consecutive, so each length group is a view
    (c, n, H) -> (c, A, n, D), attended without a mask, and no query or key is padding.
    """

    def __init__(self, config: BertConfig, rng: np.random.Generator):
        H, std = config.hidden_size, config.initializer_range
        self.query = Linear(H, H, rng, std)
        self.key = Linear(H, H, rng, std)
        self.value = Linear(H, H, rng, std)
        self.num_heads = config.num_attention_heads
        self.dropout = Dropout(config.attention_probs_dropout_prob, rng)

    def _split(self, x):    # (B, T, H) -> (B, A, T, D)
        B, T, H = x.shape
        return x.reshape(B, T, self.num_heads, H // self.num_heads).transpose(0, 2, 1, 3)

    @staticmethod
    def _merge(x):          # (B, A, T, D) -> (B, T, H)
        B, A, T, D = x.shape
        return x.transpose(0, 2, 1, 3).reshape(B, T, A * D)

    def forward(self, x, mask_bias, rows=None):
        """``rows``: None, or the sorted indices of the rows of x (flattened to (-, H)) whose context is
        wanted (the last layer's, see ``BertEncoder.forward``); the context is then (R, H). Every row is
        still a key and a value. Unpadded, only those rows are queries: the scores are (A, m, n) for a
        sequence of n tokens with m of them wanted, and q is projected for those rows only."""
        p = self.dropout.p if self.training else 0.0
        if isinstance(mask_bias, Unpadded):
            return self._forward_unpadded(x, mask_bias, p, rows)
        q = self._split(self.query.forward(x))
        k = self._split(self.key.forward(x))
        v = self._split(self.value.forward(x))
        context, probs, cache = kernels.attention_forward(q, k, v, mask_bias, p, self.dropout.rng)
        self.cache = (False, rows, x.shape, cache)
        context = self._merge(context)                                               # (B, T, H)
        return (context if rows is None else context.reshape(-1, x.shape[-1])[rows]), probs

    def backward(self, dcontext):
        """Merging heads is a reshape, so its backward is the inverse reshape; x fed all three projections,
        so its gradient is the sum of the three (hence the additions). With ``rows``, the padded path
        scatters dcontext back, zeros at the rows it did not return; the unpadded one projected q from
        those rows only, so their share of dx goes back to them."""
        unpadded, rows, shape, cache = self.take_cache()
        if unpadded:
            dq, dk, dv = kernels.unpadded_attention_backward(dcontext, cache)
            if rows is not None:
                dx = self.key.backward(dk)
                dx += self.value.backward(dv)
                dx[rows] += self.query.backward(dq)
                return dx
        else:
            if rows is not None:
                full = np.zeros((int(np.prod(shape[:-1])), shape[-1]), dtype=dcontext.dtype)
                full[rows] = dcontext
                dcontext = full.reshape(shape)
            grads = kernels.attention_backward(self._split(dcontext), cache)
            dq, dk, dv = (self._merge(d) for d in grads)
        dx = self.query.backward(dq)
        dx += self.key.backward(dk)
        dx += self.value.backward(dv)
        return dx

    def _forward_unpadded(self, x, layout, p, rows):
        k, v = self.key.forward(x), self.value.forward(x)                                 # (N, H)
        if rows is None:
            q, groups, queries = self.query.forward(x), layout.groups, None                # (N, H)
        else:
            q = self.query.forward(x[rows])                                                # (R, H)
            groups, queries = layout.groups, layout.query_positions(rows)
        context, probs, cache = kernels.unpadded_attention_forward(q, k, v, groups, self.num_heads, p,
                                                                    self.dropout.rng, queries)
        self.cache = (True, rows, x.shape, cache)
        return context, probs                    # like q, one (c, A, m, n) per block (F.attention_blocks)


class BertOutput(Module):
    """y = LayerNorm(residual + dropout(x W^T + b)): projection, residual, post-LN. (B, T, in) -> (B, T, H).

    Hugging Face has two classes of this shape, BertSelfOutput (after attention, in = H) and BertOutput
    (after the feed-forward, in = I); one class serves both, under the same attribute names.
    """

    def __init__(self, in_features: int, config: BertConfig, rng: np.random.Generator):
        self.dense = Linear(in_features, config.hidden_size, rng, config.initializer_range)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob, rng)

    def forward(self, x, residual, drawn_rows=None):
        # LayerNorm(dropout(dense(x)) + residual): the dropout, the sum and the norm are one kernel
        # (functional.dropout_add_layernorm_forward composes the three), so this module calls it with
        # its Dropout's p and rng and its LayerNorm's parameters instead of calling those two modules.
        # drawn_rows: x holds some rows of a larger batch of rows (functional.dropout_bits).
        ln = self.LayerNorm
        y, self.cache = kernels.dropout_add_layernorm_forward(
            self.dense.forward(x), residual, self.dropout.p if self.training else 0.0, self.dropout.rng,
            ln.weight.data, ln.bias.data, ln.eps, drawn_rows)
        return y

    def backward(self, dy):
        """Returns (dx, d residual): the residual sum passes the LayerNorm's input gradient to both."""
        ln = self.LayerNorm
        ddense, dsum = kernels.dropout_add_layernorm_backward(dy, self.take_cache(), ln.weight.grad, ln.bias.grad)
        return self.dense.backward(ddense), dsum


class BertAttention(Module):
    def __init__(self, config: BertConfig, rng: np.random.Generator):
        self.self = BertSelfAttention(config, rng)
        self.output = BertOutput(config.hidden_size, config, rng)

    def forward(self, x, mask_bias, rows=None):
        """``rows``: None, or the sorted indices of the rows of x (flattened to (-, H)) that go on past
        attention (the last layer's, see ``BertEncoder.forward``): every row's keys and values are
        attended to, but the output projection, residual and layer norm, and after them the
        feed-forward, run on those rows only, (R, H)."""
        context, probs = self.self.forward(x, mask_bias, rows)
        self.cache = rows
        if rows is None:
            return self.output.forward(context, x), probs
        # The dropout draws for every row, as the whole computation would, and keeps those of rows.
        x2 = x.reshape(-1, x.shape[-1])
        return self.output.forward(context, x2[rows], (rows, len(x2))), probs

    def backward(self, dy):
        dcontext, dresidual = self.output.backward(dy)
        rows = self.take_cache()
        dx = self.self.backward(dcontext)      # x reached the output by attention and by the residual
        if rows is None:
            dx += dresidual
        else:                                  # rows that stopped at attention got no residual gradient
            dx.reshape(-1, dx.shape[-1])[rows] += dresidual
        return dx


class BertIntermediate(Module):
    """h = GELU(x W_1^T + b_1): (B, T, H) -> (B, T, I); the GELU belongs to the Linear (see nn.Linear)."""

    def __init__(self, config: BertConfig, rng: np.random.Generator):
        self.dense = Linear(config.hidden_size, config.intermediate_size, rng, config.initializer_range,
                            activation=config.hidden_act)

    def forward(self, x):
        return self.dense.forward(x)

    def backward(self, dh):
        return self.dense.backward(dh)


class BertLayer(Module):
    """One post-LN Transformer encoder layer, as in BERT (not the pre-LN of later models):
        a = LayerNorm(x + Dropout(Attention(x)))              attention, attention.output
        y = LayerNorm(a + Dropout(W_2 GELU(W_1 a)))           intermediate, output

    The backward, in order (lesson 05 writes the same chain out flat, op by op):
        output:        dsum2 = LN_2'(dy);  dh = W_2-backward(dropout'(dsum2));  da = dsum2
        intermediate:  da += W_1-backward(GELU'(dh))        a fed the feed-forward AND its residual
        attn. output:  dsum1 = LN_1'(da);  dcontext = W_o-backward(dropout'(dsum1));  dx = dsum1
        self-attn.:    dx += dq W_q + dk W_k + dv W_v       x fed the residual and the three projections
    """

    def __init__(self, config: BertConfig, rng: np.random.Generator):
        self.attention = BertAttention(config, rng)
        self.intermediate = BertIntermediate(config, rng)
        self.output = BertOutput(config.intermediate_size, config, rng)

    def forward(self, x, mask_bias, rows=None):
        """``rows``: see ``BertAttention.forward``; the output is then (R, H)."""
        a, probs = self.attention.forward(x, mask_bias, rows)
        drawn_rows = None if rows is None else (rows, x.size // x.shape[-1])
        return self.output.forward(self.intermediate.forward(a), a, drawn_rows), probs

    def backward(self, dy):
        dh, da = self.output.backward(dy)
        da += self.intermediate.backward(dh)   # a fed the feed-forward and its residual
        return self.attention.backward(da)


class BertEncoder(Module):
    def __init__(self, config: BertConfig, rng: np.random.Generator):
        self.layer = [BertLayer(config, rng) for _ in range(config.num_hidden_layers)]

    def forward(self, x, mask_bias, output_hidden_states=False, output_attentions=False, last_rows=None):
        """``last_rows``: None, or the sorted rows of x (flattened to (-, H)) whose output is wanted; the
        last layer then computes only those, attending over every row (``BertAttention.forward``), and
        returns (R, H)."""
        if last_rows is not None and (output_hidden_states or output_attentions):
            raise ValueError("last_rows leaves the last layer's hidden state and attention incomplete; "
                             "output_hidden_states and output_attentions need every row")
        hidden_states, attentions = [x], []
        for i, layer in enumerate(self.layer):
            x, probs = layer.forward(x, mask_bias, last_rows if i == len(self.layer) - 1 else None)
            hidden_states.append(x)
            attentions.append(probs)
        return x, (tuple(hidden_states) if output_hidden_states else None), \
            (tuple(attentions) if output_attentions else None)

    def backward(self, dy, d_hidden_states=None):
        """``d_hidden_states``: optionally L + 1 gradients (or None) for the hidden states returned by
        ``forward``, from a head that read intermediate layers; hidden state l is layer l's input, so its
        gradient joins the flow just below that layer."""
        d_hidden = d_hidden_states if d_hidden_states is not None else (None,) * (len(self.layer) + 1)
        if len(d_hidden) != len(self.layer) + 1:
            raise ValueError(f"d_hidden_states must hold {len(self.layer) + 1} gradients, got {len(d_hidden)}")
        if d_hidden[-1] is not None:
            dy = dy + d_hidden[-1]
        for layer, d_input in zip(reversed(self.layer), reversed(d_hidden[:-1])):
            dy = layer.backward(dy)
            if d_input is not None:
                dy = dy + d_input
        return dy


class BertPooler(Module):
    """pooled = tanh([CLS] W^T + b), the input of next-sentence prediction and of classifiers."""

    def __init__(self, config: BertConfig, rng: np.random.Generator):
        self.dense = Linear(config.hidden_size, config.hidden_size, rng, config.initializer_range)

    def forward(self, hidden):                                # (B, T, H) -> (B, H)
        pooled = np.tanh(self.dense.forward(hidden[:, 0]))
        self.cache = (pooled, hidden.shape)
        return pooled

    def backward(self, dpooled):
        """tanh' = 1 - tanh^2; only position 0 ([CLS]) receives a gradient."""
        pooled, seq_shape = self.take_cache()
        dcls = self.dense.backward(dpooled * (1 - pooled * pooled))
        dhidden = np.zeros(seq_shape, dtype=dcls.dtype)
        dhidden[:, 0] = dcls
        return dhidden


@dataclasses.dataclass
class BertModelOutput:
    """The Hugging Face output names. ``hidden_states`` holds L + 1 arrays (B, T, H), the embedding
    output first; ``attentions`` holds L arrays (B, A, T, T) of attention probabilities (before
    attention dropout)."""
    last_hidden_state: np.ndarray
    pooler_output: np.ndarray
    hidden_states: tuple | None = None
    attentions: tuple | None = None


class BertModel(Module, PreTrainedModel):
    """Embeddings -> L encoder layers -> pooler.

    ``rng`` initialises the weights and then draws every dropout mask, so one seed makes a run
    repeatable. Weights are float32; ``astype(np.float64)`` converts for gradient checks.

    The layers run on the real tokens only (``Unpadded``); the outputs come back as (B, T, H) with
    zeros at padded positions, where the padded computation has values no loss reads. ``unpad =
    False`` on an instance runs the padded computation instead (the readable one, and the reference
    the tests compare the unpadded one with): the same outputs at real positions and the same
    gradients.
    """

    unpad = True

    def __init__(self, config: BertConfig, rng: np.random.Generator):
        generator("rng", rng)
        self.config = config
        self.rng = rng
        self.embeddings = BertEmbeddings(config, rng)
        self.encoder = BertEncoder(config, rng)
        self.pooler = BertPooler(config, rng)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states=False,
                output_attentions=False, inputs_embeds_delta=None, output_positions=None) -> BertModelOutput:
        """input_ids (B, T) integers < vocab_size; token_type_ids (B, T) in [0, type_vocab_size), zeros if
        None; attention_mask (B, T) of 1 (real token) / 0 (padding), all ones if None.

        ``output_positions``: None, or (b, t), two integer arrays naming the positions whose
        last_hidden_state the caller reads (the pooler reads every [CLS], position 0, as well). The last
        layer then computes those positions only (``BertEncoder.forward``): their queries, and after
        attention, output projection, layer norms and feed-forward; its attention still reads every
        token's keys and values, so those positions come out as without it, and last_hidden_state is 0 at
        every other position. Pretraining passes its masked positions: the MLM loss reads nothing else.
        Ignored with ``output_hidden_states`` or ``output_attentions``, which need every position."""
        input_ids, token_type_ids, attention_mask = self.check_inputs(input_ids, token_type_ids, attention_mask)
        wanted = self.output_rows(output_positions, attention_mask)
        if output_hidden_states or output_attentions:
            wanted = None
        if self.unpad:
            return self._forward_unpadded(input_ids, token_type_ids, attention_mask,
                                          output_hidden_states, output_attentions,
                                          inputs_embeds_delta, wanted)
        self.cache = (None, wanted)
        dtype = self.dtype
        # (B, T): 0 where a key may be attended to, MASK_BIAS where it is padding.
        mask_bias = (1 - attention_mask).astype(dtype) * dtype.type(F.MASK_BIAS)
        x = self.embeddings.forward(input_ids, token_type_ids, inputs_embeds_delta)       # (B, T, H)
        last, hidden_states, attentions = self.encoder.forward(x, mask_bias, output_hidden_states,
                                                               output_attentions, wanted)
        if wanted is not None:
            last = _scatter_rows(last, wanted, x.shape)                                   # (B, T, H)
        pooled = self.pooler.forward(last)                                                # (B, H)
        return BertModelOutput(last, pooled, hidden_states, attentions)

    @staticmethod
    def output_rows(output_positions, attention_mask):
        """The flat positions b T + t (sorted, each once) of ``output_positions`` and of every [CLS]
        that hold real tokens; None if output_positions is None."""
        if output_positions is None:
            return None
        B, T = attention_mask.shape
        b, t = (np.asarray(a) for a in output_positions)
        if not (np.issubdtype(b.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)) or b.shape != t.shape:
            raise ValueError("output_positions must be two integer arrays (b, t) of one shape")
        if b.size and (b.min() < 0 or b.max() >= B or t.min() < 0 or t.max() >= T):
            raise ValueError(f"output_positions must name positions of the (B, T) = ({B}, {T}) batch")
        flat = np.unique(np.concatenate([b.reshape(-1) * T + t.reshape(-1), np.arange(B) * T]))
        return flat[attention_mask.reshape(-1)[flat] != 0]

    def _forward_unpadded(self, input_ids, token_type_ids, attention_mask, output_hidden_states,
                          output_attentions, inputs_embeds_delta, wanted):
        layout = Unpadded.from_mask(attention_mask)
        index = layout.index
        rows = None
        if wanted is not None:            # row r of x holds flat position index[r]: invert that map
            row_of = np.empty(layout.shape[0] * layout.shape[1], dtype=np.int64)
            row_of[index] = np.arange(index.size)
            rows = np.sort(row_of[wanted])           # in row order: each sequence's rows stay together
        # with rows, the backward needs the flat position of each row of the last layer's output
        self.cache = (layout, None if rows is None else index[rows])
        delta = None if inputs_embeds_delta is None else layout.gather(inputs_embeds_delta)
        x = self.embeddings.forward(layout.gather(input_ids), layout.gather(token_type_ids),
                                    delta, position_ids=index % layout.shape[1])        # (N, H)
        last, hidden_states, attentions = self.encoder.forward(x, layout, output_hidden_states,
                                                               output_attentions, rows)
        if rows is None:
            last = layout.scatter(last)                                             # (B, T, H)
        else:
            last = _scatter_rows(last, index[rows], layout.shape)                     # (B, T, H)
        if hidden_states is not None:
            hidden_states = tuple(layout.scatter(h) for h in hidden_states)
        if attentions is not None:
            attentions = tuple(layout.scatter_probs(p) for p in attentions)
        pooled = self.pooler.forward(last)                                                  # (B, H)
        return BertModelOutput(last, pooled, hidden_states, attentions)

    def backward(self, d_last_hidden_state=None, d_pooler_output=None, d_hidden_states=None):
        """Fill every parameter gradient (accumulating) from the gradients of the outputs, and return
        the gradient with respect to the word-embedding output (B, T, H). Any of the three may be None;
        ``d_hidden_states`` (L + 1 entries, each (B, T, H) or None) needs a forward with
        ``output_hidden_states=True``."""
        if self.embeddings.cache is None:
            raise RuntimeError("backward() needs a forward() first: it reads what the forward saved")
        if d_last_hidden_state is None and d_pooler_output is None and d_hidden_states is None:
            raise ValueError("backward needs at least one output gradient")
        d = d_last_hidden_state
        if d_pooler_output is not None:
            d_pool = self.pooler.backward(d_pooler_output)    # the pooler read the last layer's [CLS]
            d = d_pool if d is None else d + d_pool
        if d is None:
            d = np.zeros_like(next(g for g in d_hidden_states if g is not None))
        layout, wanted = self.take_cache()
        # out = scatter(rows) sets out[index] = rows and leaves padding at a constant 0, so
        # d rows = gather(d out): the gradients at padded positions reach no parameter. Dually the
        # gathered delta's gradient (N, H) is scattered back to (B, T, H), zero at padding. If the last
        # layer computed only the wanted positions, the gradient enters it there, as (R, H).
        if wanted is not None:
            d = d.reshape(-1, d.shape[-1])[wanted]
        if layout is None:
            return self.embeddings.backward(self.encoder.backward(d, d_hidden_states))
        if d_hidden_states is not None:
            d_hidden_states = [None if g is None else layout.gather(g) for g in d_hidden_states]
        d_rows = self.encoder.backward(d if wanted is not None else layout.gather(d), d_hidden_states)   # (N, H)
        return layout.scatter(self.embeddings.backward(d_rows))

    def check_inputs(self, input_ids, token_type_ids=None, attention_mask=None):
        """Validate and normalise the three input arrays; every error names expected and actual."""
        c = self.config
        input_ids = _int_array("input_ids", input_ids)
        if input_ids.ndim != 2 or input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
            raise ValueError(f"input_ids must have shape (B, T) with B, T >= 1, got {input_ids.shape}")
        B, T = input_ids.shape
        if T > c.max_position_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings {c.max_position_embeddings}")
        _check_range("input_ids", input_ids, c.vocab_size, "vocab_size")
        if token_type_ids is None:
            token_type_ids = np.zeros((B, T), dtype=np.int64)
        token_type_ids = _int_array("token_type_ids", token_type_ids)
        if token_type_ids.shape != (B, T):
            raise ValueError(f"token_type_ids must have shape {(B, T)} like input_ids, got {token_type_ids.shape}")
        _check_range("token_type_ids", token_type_ids, c.type_vocab_size, "type_vocab_size")
        if attention_mask is None:
            attention_mask = np.ones((B, T), dtype=np.int64)
        attention_mask = np.asarray(attention_mask)
        if attention_mask.shape != (B, T):
            raise ValueError(f"attention_mask must have shape {(B, T)} like input_ids, got {attention_mask.shape}")
        if not np.isin(attention_mask, (0, 1)).all():
            raise ValueError("attention_mask must contain only 0 (padding) and 1 (token)")
        return input_ids, token_type_ids, attention_mask


def _scatter_rows(rows, flat, shape):
    """(R, ...) rows -> (B, T, ...), row r at flat position flat[r] = b T + t, zeros elsewhere."""
    out = np.zeros((shape[0] * shape[1], *rows.shape[1:]), dtype=rows.dtype)
    out[flat] = rows
    return out.reshape(*shape[:2], *rows.shape[1:])


def _int_array(name, a):
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    return a


def _check_range(name, a, limit, limit_name):
    if a.size and (a.min() < 0 or a.max() >= limit):
        bad = a.max() if a.max() >= limit else a.min()
        raise ValueError(f"{name} contains {bad}, outside [0, {limit}) ({limit_name} = {limit})")
