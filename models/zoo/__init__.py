"""Deep model zoo: one file per model, each holding its frozen config and its nn.Module.

Every module is built as `Module(config, dims)` and maps [B, F] (tabular) or [B, L, F]
(sequence) to logits [B, H, 3] (direction) or returns [B, H] (return). The registry in
`models.registry` names them; nothing here is looked up by string.
"""
