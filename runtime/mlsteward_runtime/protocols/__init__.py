"""Protocol codecs over the data plane: simple (/predict), KServe V1 and Open Inference (V2) REST."""
