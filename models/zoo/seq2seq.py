"""Sequence-to-sequence: recurrent encoder, attention decoder with one step per horizon.

The decoder state starts from the encoder's final state. At horizon step h it scores every
encoder state against its previous state with Bahdanau (additive) attention
(Bahdanau et al. 2015: e_t = v^T tanh(W_q s + W_k h_t)), reads the context, and takes a
recurrent step on [horizon embedding h; context]. The step's [state; context] gives the
prediction for horizon h, so the horizons share weights but not their attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import (
    HorizonHead,
    check_choice,
    check_dropout,
    check_positive,
    check_sequence_input,
    recurrent_dropout,
)

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclass(frozen=True)
class Seq2SeqConfig:
    cell: str = "gru"
    hidden_size: int = 64
    num_layers: int = 1  # encoder depth; the decoder has one layer
    attention_size: int = 32
    horizon_embedding: int = 8
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_choice("seq2seq", "cell", self.cell, tuple(CELLS))
        check_positive("seq2seq", "hidden_size", self.hidden_size, 64)
        check_positive("seq2seq", "num_layers", self.num_layers, 1)
        check_positive("seq2seq", "attention_size", self.attention_size, 32)
        check_positive("seq2seq", "horizon_embedding", self.horizon_embedding, 8)
        check_dropout("seq2seq", self.dropout)


class AdditiveAttention(nn.Module):
    """Bahdanau scores of one query against all keys."""

    def __init__(self, hidden: int, attn: int) -> None:
        super().__init__()
        self.w_key = nn.Linear(hidden, attn, bias=False)
        self.w_query = nn.Linear(hidden, attn)
        self.v = nn.Linear(attn, 1, bias=False)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # query [B, D], keys [B, L, A] (pre-projected), values [B, L, D]
        scores = self.v(torch.tanh(keys + self.w_query(query).unsqueeze(1)))  # [B, L, 1]
        weights = torch.softmax(scores.squeeze(-1), dim=-1)  # [B, L]
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # [B, D]
        return context, weights


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        rnn, d = CELLS[config.cell], config.hidden_size
        self.encoder = rnn(
            dims.n_features,
            d,
            num_layers=config.num_layers,
            dropout=recurrent_dropout(config.dropout, config.num_layers),
            batch_first=True,
        )
        # nn.GRU / nn.LSTM stepped one time step at a time: exports to ONNX, unlike *Cell.
        self.decoder = rnn(config.horizon_embedding + d, d, batch_first=True)
        self.horizon_emb = nn.Parameter(torch.randn(dims.n_horizons, config.horizon_embedding))
        self.attention = AdditiveAttention(d, config.attention_size)
        self.head = HorizonHead(2 * d, dims, config.dropout)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_sequence_input("seq2seq", x, self.dims)
        enc, final = self.encoder(x)  # [B, L, F] -> [B, L, D]; final [layers, B, D]
        keys = self.attention.w_key(enc)  # [B, L, A], computed once for all horizons
        if self.config.cell == "lstm":
            state = (final[0][-1:].contiguous(), final[1][-1:].contiguous())  # [1, B, D] x2
        else:
            state = final[-1:].contiguous()  # [1, B, D]
        batch = x.shape[0]
        outputs, weights = [], []
        for h in range(self.dims.n_horizons):
            query = state[0][0] if isinstance(state, tuple) else state[0]  # [B, D]
            context, w = self.attention(query, keys, enc)  # [B, D], [B, L]
            emb = self.horizon_emb[h].unsqueeze(0).expand(batch, -1)  # [B, E]
            step_in = torch.cat([emb, context], dim=-1).unsqueeze(1)  # [B, 1, E + D]
            step_out, state = self.decoder(step_in, state)  # [B, 1, D]
            outputs.append(torch.cat([step_out.squeeze(1), context], dim=-1))  # [B, 2D]
            weights.append(w)
        features = torch.stack(outputs, dim=1)  # [B, H, 2D]
        return self.head(features), torch.stack(weights, dim=1), enc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def interpret(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": [B, H, L] weights per horizon, "hidden_states": [B, L, D]}."""
        _, attention, enc = self._run(x)
        return {"attention": attention, "hidden_states": enc}
