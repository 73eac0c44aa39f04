"""Phase 'render' (render.smk): the portrait warp, rendering the test clips, `mssync animate`."""
