"""Event recordings → frame sequences: readers, folder layouts, integration, cache, augmentation.

An event is ``(t, x, y, p)``: a timestamp in microseconds, a pixel and a polarity (0 = OFF,
1 = ON); a spike train (SHD) is ``(t, x)`` over input channels. Recordings are numpy structured
arrays with those field names, as tonic returns them.
"""
