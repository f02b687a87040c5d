"""`python -m ul_pipeline sample`: draw images from a (Stage-1, base model) pair, labels or prompts, to a grid
and, given a folder, one PNG per sample plus an .npz (ul_pipeline.evaluation.take_away)."""

from __future__ import annotations


def cmd_sample(args) -> None:
    from ul_pipeline.config import load_config
    from ul_pipeline.console import progress_bar as _progress
    import torch

    from ul_pipeline.diffusion.solvers import decoder_sampler
    from ul_pipeline.evaluation.image import save_grid
    from ul_pipeline.evaluation.metrics import to_uint8
    from ul_pipeline.evaluation.pairing import check_base_encoder, check_label, check_text_encoder
    from ul_pipeline.stage1.training import load_stage1

    from ul_pipeline.stage2.text_conditioned import TextConditionedBaseModel
    from ul_pipeline.stage2.training import load_base_model

    ul, stage1_cfg, s1_meta = load_stage1(args.stage1)
    base, _, base_meta = load_base_model(args.base)
    check_base_encoder(args.base, base_meta, args.stage1, s1_meta)  # before any work: a wrong pair costs nothing
    check_text_encoder(args.base, base_meta)
    text_model = isinstance(base, TextConditionedBaseModel)
    if text_model != bool(args.prompt):
        raise ValueError(f"base model {args.base} is text-conditioned: give --prompt \"...\" (one or more)" if text_model
                         else f"--prompt given, but base model {args.base} is class-conditional (use --label)")
    if text_model and args.label is not None:
        raise ValueError(f"--label given, but base model {args.base} is text-conditioned: it reads no class label "
                         "(give --prompt only)")
    if not text_model:
        check_label(args.label, base, args.base)
    if getattr(base, "context_latents", 0):
        raise ValueError(f"base model {args.base} continues clips from their first frames (stage2.context_frames); "
                         "`sample` has no clips to continue: `evaluate` samples continuations of held-out clips")
    smp = (load_config(args.experiment, args.overrides) if args.experiment else stage1_cfg).sample  # as `evaluate`: --experiment, else Stage 1's
    steps, decoder_steps = args.steps or smp.steps, args.decoder_steps or smp.decoder_steps
    guidance = smp.guidance if args.guidance is None else args.guidance
    eta = smp.eta if args.eta is None else args.eta
    decoder_eta = smp.decoder_eta if args.decoder_eta is None else args.decoder_eta
    folder = None if args.out.lower().endswith(".png") else args.out  # a folder: grid + one file per sample
    grid_path = f"{folder}/grid.png" if folder else args.out
    if text_model:  # --num samples per prompt, one row each, the prompt beside it
        from ul_pipeline.evaluation.prompts import encode_prompts, prompt_grid, sample_prompts

        text = encode_prompts(args.prompt, base_meta, "cpu", base.cross)
        per_prompt = args.num or 4
        x = sample_prompts(ul, base, text, per_prompt=per_prompt, steps=steps, decoder_steps=decoder_steps,
                           guidance=guidance, eta=eta, decoder_eta=decoder_eta, seed=args.seed, batch_size=smp.batch_size,
                           decoder_sampler=decoder_sampler(smp), guidance_interval=smp.guidance_interval)
        path = prompt_grid(x, args.prompt, grid_path)
        labels, prompts = None, [p for p in args.prompt for _ in range(per_prompt)]  # prompt-major, as the grid
        what = f"{len(args.prompt)} prompts x {per_prompt} samples"
    else:
        g = torch.Generator().manual_seed(args.seed)
        args.num = args.num or 64
        labels = (torch.full((args.num,), args.label) if args.label is not None
                  else torch.arange(args.num) % max(base.num_classes, 1))
        z0 = base.sample_z0(labels, steps, guidance, generator=g, progress=_progress("base model"), eta=eta,
                            guidance_interval=smp.guidance_interval)
        x = to_uint8(ul.decode(z0, decoder_steps, generator=g, progress=_progress("decoder"), eta=decoder_eta,
                               sampler=decoder_sampler(smp)))
        if x.ndim == 5:  # clips (N, C, T, H, W): one row of frames per clip
            from ul_pipeline.evaluation.video import frame_strip

            path = frame_strip(x, grid_path)
        else:
            path = save_grid(x, grid_path, nrow=max(1, int(args.num ** 0.5)))
        labels, prompts, what = (None if base.num_classes == 0 else labels), None, f"{args.num} samples"
    if folder:
        from ul_pipeline.evaluation.take_away import write_sample_files

        npz = write_sample_files(folder, x, seed=args.seed, labels=labels, prompts=prompts)
        path = f"{path}, {len(x)} PNGs sample_0000.png... and {npz.name} in {folder}"
    print(f"wrote {path} ({what}: {steps} base steps with eta {eta}, guidance {guidance}; "
          f"{decoder_steps} decoder steps with eta {decoder_eta})")
