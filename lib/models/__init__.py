"""Models, one readable file each (nanoGPT style).

Sequential models follow RecBole's contract, ``calculate_loss(batch) -> scalar`` and
``full_sort_predict(batch) -> (B, n_items)`` scores, and train with ``lib.train.fit``: SASRec (sasrec.py), the
dual-view fusion (fusion.py), LLMDiRec (llmdirec.py), ADARec (adarec.py), and HDRec for one phase at a time
(hdrec.py; its alternating loop in hdrec_train.py, its prompts in hdrec_prompts.py).

Two models do not: LightGCN (lightgcn.py) scores by user id, not by sequence, and DeftRec (deftrec.py) is a
pipeline of three trained parts (tokenizer + LoRA, a conditional denoiser, a retriever). Each hands the suite's one
loop (``lib.train.loop``) its batches, step and validation, and ``lib.metrics`` a ``score_fn(users, stage)``.
"""
