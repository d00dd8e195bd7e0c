"""Video clips listed in text files (V-JEPA's list format), decoded with PyAV, one concern a module:

- `lists`: `VideoListConfig` (the `data.video` settings) and the list files (`read_video_list`, `VideoEntry`);
- `sampling`: which frames a clip takes (frame step from the video's rate, clip starts for training and evaluation);
- `decode`: the frames a plan asks for, from one open of the file (`read_video`, `read_frames`): a seek to the
  keyframe before each clip, frames named by timestamp, a decode from the start where seeking cannot be trusted;
- `transforms`: crop boxes (random resized for training, squares along the long side for evaluation) and the one
  crop -> resize -> flip -> normalise path (`crop_clip`) that training and evaluation share;
- `dataset`: `VideoListDataset`, a sample a pure function of `(index, sample_seed)`.
"""
