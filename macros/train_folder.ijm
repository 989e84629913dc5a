// deepseg: train a model from a folder of images and a folder of label images.
//
// Arguments (getArgument(), key=value, [brackets] around values with spaces):
//   images=<folder of images, or a DeepMIB training folder with Images/ and Labels/>
//   labels=<folder of label images (paired by sorted name); omit with a DeepMIB folder>
//   model=<folder for the trained model>
//   optional: network=unet2d patch=128 epochs=50 batch=4 classes=auto (auto = largest label + 1)
//             options=[depth=4 filters=32] lr=0.001 validation=0.25 device=auto
// Run:  deepseg macro macros/train_folder.ijm --args images=/data/train/images labels=/data/train/labels model=/models/nuclei

args = getArgument();
images = call("ij.Macro.getValue", args, "images", "");
labels = call("ij.Macro.getValue", args, "labels", "");
model = call("ij.Macro.getValue", args, "model", "");
network = call("ij.Macro.getValue", args, "network", "unet2d");
patch = call("ij.Macro.getValue", args, "patch", "128");
epochs = call("ij.Macro.getValue", args, "epochs", "50");
batch = call("ij.Macro.getValue", args, "batch", "4");
classes = call("ij.Macro.getValue", args, "classes", "auto");
options = call("ij.Macro.getValue", args, "options", "");
lr = call("ij.Macro.getValue", args, "lr", "0.001");
validation = call("ij.Macro.getValue", args, "validation", "0.25");
device = call("ij.Macro.getValue", args, "device", "auto");
if (images == "" || model == "")
	exit("train_folder.ijm needs images=<folder> labels=<folder> model=<folder>; got: " + args);

run("DeepSeg Train...", "images=[" + images + "] labels=[" + labels + "] out=[" + model + "] network=" + network + " options=[" + options + "] patch=" + patch + " epochs=" + epochs + " batch=" + batch + " classes=" + classes + " lr=" + lr + " validation=" + validation + " device=" + device);
// The Results table holds one row per epoch.
last = nResults - 1;
print("deepseg: model saved to " + model + " after " + nResults + " epoch(s); last training loss " + getResult("loss", last));
