"""The motion space (the motion_space rule): the space, its fit stage, the split reader, head dynamics."""
