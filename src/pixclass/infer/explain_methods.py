"""The attribution methods of ``pixclass explain`` by name: a leaf, so the command line can list them
without loading torch and Captum (start-up time of `pixclass --help`)."""

METHODS = ("gradcam", "saliency", "integrated-gradients", "occlusion")
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "saliency": "saliency",
    "integrated-gradients": "integrated gradients",
    "occlusion": "occlusion",
}
