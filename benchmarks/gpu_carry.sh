#!/bin/bash
# Run HERE (not on the device), once, before benchmarks/gpu_sc35.sh or gpu_tables.sh: puts into .gpu/ (git-ignored,
# ~13 MB) what the device's image lacks: for `ssm speech`, the wheels of jsonargparse (LightningCLI), soundfile and
# their pure-Python needs; for the SSSD table, diffusers (the noise schedulers) and its importlib-metadata; the
# versions are uv.lock's.  Also espeak-ng with its data from Debian's packages, plus a stand-in for
# libpcaudio (espeak-ng links it for audio output; `--stdout` never opens a device, and the real one pulls
# in PulseAudio and ALSA, which the device does not have).  Needs pip, apt-get download and a C compiler.
set -eu
G=.gpu
mkdir -p "$G/wheels" "$G/debs" "$G/lib"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$G/wheels" jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 soundfile==0.14.0 \
  cffi==2.1.1 pycparser==3.12 diffusers==0.42.1 importlib-metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0
(cd "$G/debs" && apt-get download espeak-ng espeak-ng-data libespeak-ng1 libsonic0 2>/dev/null)
cat > "$G/lib/pcaudio_stub.c" <<'C'
/* libpcaudio.so.0 without audio: espeak-ng links it, but --stdout never opens a device. */
#include <stddef.h>
struct audio_object;
struct audio_object *create_audio_device_object(const char *d, const char *a, const char *n) { (void)d; (void)a; (void)n; return NULL; }
int audio_object_open(struct audio_object *o, int f, unsigned r, unsigned char c) { (void)o; (void)f; (void)r; (void)c; return -1; }
void audio_object_close(struct audio_object *o) { (void)o; }
void audio_object_destroy(struct audio_object *o) { (void)o; }
int audio_object_write(struct audio_object *o, const void *d, size_t n) { (void)o; (void)d; (void)n; return -1; }
int audio_object_drain(struct audio_object *o) { (void)o; return 0; }
int audio_object_flush(struct audio_object *o) { (void)o; return 0; }
const char *audio_object_strerror(struct audio_object *o, int e) { (void)o; (void)e; return "no audio device"; }
C
gcc -O2 -shared -fPIC -Wl,-soname,libpcaudio.so.0 -o "$G/lib/libpcaudio.so.0" "$G/lib/pcaudio_stub.c"
du -sh "$G"; ls "$G"/*
