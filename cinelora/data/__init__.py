"""Data: video folders and manifests read with decord (`videos`) at one size or in resolution × frame-count
`buckets`, the procedural world that `proxy` and `smoke` write as real video files (`world`), 2AFC triplets in
the BAPPS layout (`bapps`) and the procedural 2AFC set cut from the world (`two_afc_world`)."""
