# Sourced by the speech benchmarks: `bench_recording DIR` writes DIR/audio.wav, ~87 s of
# speech at 16 kHz mono: Debian's pocketsphinx-testdata LibriVox clips, an espeak-ng meeting
# script, both again (deploy/setup.sh --test installs the clips, espeak-ng and sox).
bench_recording() {
  local dir=$1 lv=/usr/share/pocketsphinx/test/data/librivox
  espeak-ng -v en-us -s 160 -w "$dir/meeting.wav" "Good morning everyone. Let's start the weekly planning meeting. \
The first item is the budget for the new website. We decided to move the product launch to the fifteenth of March. \
Anna will update the project plan by Friday. Finally, the team agreed to hire two more engineers. Thank you all."
  sox "$dir/meeting.wav" -r 16000 "$dir/meeting16.wav"
  sox "$lv"/*.wav "$dir/meeting16.wav" "$lv"/*.wav "$dir/meeting16.wav" "$dir/audio.wav"
  rm -f "$dir/meeting.wav" "$dir/meeting16.wav"
}
