"""Media tools: ffmpeg/ffprobe calls, log-mel audio features, the MediaPipe landmarker, mesh index tables, sheet helpers."""
