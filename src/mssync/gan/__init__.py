"""Phase 'gan' (gan.smk): the generator and discriminators, GAN training, generation, the generator's evaluation."""
