"""What the authors of public DT checkpoints published beside them (state statistics, return conditioning), by hub id.

The `edbeeching/decision-transformer-gym-*` checkpoints ship weights and config only; their model cards give the
mean and std of the training states. Each entry's `source` is where its numbers were read. A target return or
return scale left None was not published for that checkpoint: the policy then uses seqrl's defaults (the DT
paper's target return for the env, and a return scale of 1000, as the paper's gym code).
`decision-transformer-gym-halfcheetah-medium-replay` is left out: its card lists 18 stds for 17 state dimensions.
"""

from dataclasses import dataclass

from seqrl.planners.decision.options import DecisionMeta


@dataclass(frozen=True)
class Published:
    """One checkpoint's published numbers and where they were published."""

    state_mean: tuple[float, ...]
    state_std: tuple[float, ...]
    source: str  # URL the numbers were read from
    target_return: float | None = None
    return_scale: float | None = None


# the numbers as published, a few per line
# fmt: off
PUBLISHED = {
    # target 3600 and scale 1000 from transformers' examples/research_projects/decision_transformer/
    # run_decision_transformer.py (https://github.com/huggingface/transformers), which runs this checkpoint
    "edbeeching/decision-transformer-gym-hopper-medium": Published(
        state_mean=(1.311279, -0.08469521, -0.5382719, -0.07201576, 0.04932366, 2.1066856, -0.15017354, 0.00878345,
                    -0.2848186, -0.18540096, -0.28461286),
        state_std=(0.17790751, 0.05444621, 0.21297139, 0.14530419, 0.6124444, 0.85174465, 1.4515252, 0.6751696,
                   1.536239, 1.6160746, 5.6072536),
        source="https://huggingface.co/edbeeching/decision-transformer-gym-hopper-medium",  # its model card
        target_return=3600.0,
        return_scale=1000.0,
    ),
    # the same numbers as https://huggingface.co/blog/decision-transformers uses
    "edbeeching/decision-transformer-gym-hopper-expert": Published(
        state_mean=(1.3490015, -0.11208222, -0.5506444, -0.13188992, -0.00378754, 2.6071432, 0.02322114, -0.01626922,
                    -0.06840388, -0.05183131, 0.04272673),
        state_std=(0.15980862, 0.0446214, 0.14307782, 0.17629202, 0.5912333, 0.5899924, 1.5405099, 0.8152689,
                   2.0173461, 2.4107876, 5.8440027),
        source="https://huggingface.co/edbeeching/decision-transformer-gym-hopper-expert",  # its model card
    ),
    "edbeeching/decision-transformer-gym-hopper-medium-replay": Published(
        state_mean=(1.2305138, -0.04371411, -0.44542956, -0.09370098, 0.09094488, 1.3694725, -0.19992675, -0.02286135,
                    -0.5287045, -0.14465883, -0.19652697),
        state_std=(0.17565121, 0.06369286, 0.34383234, 0.19566889, 0.5547985, 1.0510299, 1.1583077, 0.79631287,
                   1.4802359, 1.6540332, 5.108601),
        source="https://huggingface.co/edbeeching/decision-transformer-gym-hopper-medium-replay",  # its model card
    ),
    "edbeeching/decision-transformer-gym-halfcheetah-medium": Published(
        state_mean=(-0.06845774, 0.01641455, -0.18354906, -0.27624607, -0.34061527, -0.09339716, -0.21321271,
                    -0.08774239, 5.1730075, -0.04275195, -0.03610836, 0.14053793, 0.06049833, 0.09550975, 0.067391,
                    0.00562739, 0.01338279),
        state_std=(0.07472999, 0.30234998, 0.3020731, 0.34417078, 0.17619242, 0.5072056, 0.25670078, 0.32948127,
                   1.2574149, 0.7600542, 1.9800916, 6.5653625, 7.4663677, 4.472223, 10.566964, 5.6719327, 7.498259),
        source="https://huggingface.co/edbeeching/decision-transformer-gym-halfcheetah-medium",  # its model card
    ),
    "edbeeching/decision-transformer-gym-halfcheetah-expert": Published(
        state_mean=(-0.04489148, 0.03232588, 0.06034835, -0.17081226, -0.19480659, -0.05751596, 0.09701628,
                    0.03239211, 11.047426, -0.07997331, -0.32363534, 0.36297753, 0.42322603, 0.40836546, 1.1085187,
                    -0.4874403, -0.0737481),
        state_std=(0.04002118, 0.4107858, 0.54217845, 0.41522816, 0.23796624, 0.62036866, 0.30100912, 0.21737163,
                   2.2105937, 0.572586, 1.7255033, 11.844218, 12.06324, 7.0495934, 13.499867, 7.195647, 5.0264325),
        source="https://huggingface.co/edbeeching/decision-transformer-gym-halfcheetah-expert",  # its model card
    ),
    "edbeeching/decision-transformer-gym-walker2d-medium": Published(
        state_mean=(1.218966, 0.14163373, -0.03704914, -0.1381431, 0.51382244, -0.0471911, -0.47288352, 0.04225416,
                    2.3948874, -0.03143199, 0.04466356, -0.02390724, -0.10134014, 0.09090938, -0.00419264, -0.12120572,
                    -0.5497064),
        state_std=(0.12311358, 0.324188, 0.11456084, 0.26230657, 0.5640279, 0.22718786, 0.38373196, 0.7373677,
                   1.2387927, 0.7980206, 1.5664079, 1.8092705, 3.0256042, 4.062486, 1.4586568, 3.744569, 5.585129),
        source="https://huggingface.co/edbeeching/decision-transformer-gym-walker2d-medium",  # its model card
    ),
    "edbeeching/decision-transformer-gym-walker2d-medium-replay": Published(
        state_mean=(1.2093647, 0.13264023, -0.14371201, -0.20465161, 0.55776125, -0.03231537, -0.2784661, 0.19130707,
                    1.4701707, -0.12504704, 0.05649531, -0.09991033, -0.34034026, 0.03546293, -0.08934259, -0.2992438,
                    -0.5984178),
        state_std=(0.11929835, 0.3562574, 0.258522, 0.42075422, 0.5202291, 0.15685083, 0.3677098, 0.7161388,
                   1.3763766, 0.8632222, 2.6364644, 3.0134118, 3.720684, 4.867284, 2.6681626, 3.845187, 5.47683867),
        source="https://huggingface.co/edbeeching/decision-transformer-gym-walker2d-medium-replay",  # its model card
    ),
    "edbeeching/decision-transformer-gym-walker2d-expert": Published(
        state_mean=(1.2384834e+00, 1.9578537e-01, -1.0475016e-01, -1.8579608e-01, 2.3003316e-01, 2.2800924e-02,
                    -3.7383768e-01, 3.3779100e-01, 3.9250960e+00, -4.7428459e-03, 2.5267061e-02, -3.9287535e-03,
                    -1.7367510e-02, -4.8212224e-01, 3.5432147e-04, -3.7124525e-03, 2.6285544e-03),
        state_std=(0.06664903, 0.16980624, 0.17309439, 0.21843709, 0.74599105, 0.02410989, 0.3729872, 0.6226182,
                   0.9708009, 0.72936815, 1.504065, 2.495893, 3.511518, 5.3656907, 0.79503316, 4.317483, 6.1784487),
        source="https://huggingface.co/edbeeching/decision-transformer-gym-walker2d-expert",  # its model card
    ),
}
# fmt: on


def published_meta(meta: DecisionMeta, hub_id: str | None) -> tuple[DecisionMeta, str | None]:
    """`meta` completed with what was published for hub checkpoint `hub_id` (when it stores no statistics of its own),
    and the URL the numbers came from (None when nothing was added)."""
    entry = PUBLISHED.get(hub_id or "")
    if entry is None or meta.state_mean is not None:
        return meta, None
    published = {"target_return": entry.target_return, "return_scale": entry.return_scale}
    policy = {**{name: value for name, value in published.items() if value is not None}, **meta.policy}
    completed = meta.replace(state_mean=list(entry.state_mean), state_std=list(entry.state_std), policy=policy)
    return completed, entry.source
