"""The pipeline's fixed rates and numeric floors, named once.

FPS and SAMPLE_RATE are the rates the crop stage writes by default (params.yaml crop.fps and
crop.sample_rate); code that has a clip's own metadata uses that instead, and these serve where no
clip is at hand (a user's speech for `mssync animate`, a generated track's timing).
"""

FPS = 25  # video frames per second of the cropped clips and of every generated track
SAMPLE_RATE = 16000  # mono PCM rate of the cropped clips' audio and of the generator's speech input
STD_FLOOR = 1e-6  # below this a standard deviation counts as zero (a constant feature, digital silence)

# Where the pipeline writes what `mssync generate` / `animate` load (Snakemake targets and CLI defaults).
GENERATOR_PATH = "models/generator.pt"
MOTION_SPACE_PATH = "models/motion_space.npz"
