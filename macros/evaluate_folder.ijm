// deepseg: compare a folder of predicted label images with a folder of ground truth.
//
// Arguments (getArgument(), key=value, [brackets] around values with spaces):
//   prediction=<folder of predicted label images>  truth=<folder of ground-truth label images>
//   (files are paired by name, extension ignored)
//   optional: results=<CSV file for the per-image table>  classes=0 (0 = largest label + 1)
//             ignore=-1 (truth label to leave out, -1 = none)  names=[background,nucleus]
// Run:  deepseg macro macros/evaluate_folder.ijm --args prediction=/data/labels truth=/data/truth results=/data/metrics.csv

args = getArgument();
prediction = call("ij.Macro.getValue", args, "prediction", "");
truth = call("ij.Macro.getValue", args, "truth", "");
results = call("ij.Macro.getValue", args, "results", "");
classes = call("ij.Macro.getValue", args, "classes", "0");
ignore = call("ij.Macro.getValue", args, "ignore", "-1");
names = call("ij.Macro.getValue", args, "names", "");
if (prediction == "" || truth == "")
	exit("evaluate_folder.ijm needs prediction=<folder> truth=<folder>; got: " + args);

run("DeepSeg Evaluate...", "prediction=[" + prediction + "] truth=[" + truth + "] classes=" + classes + " ignore=" + ignore + " names=[" + names + "]");
// One row per image, and a last row "all" when there are several.
last = nResults - 1;
print("deepseg: " + getResultString("image", last) + ": mean foreground Dice " + d2s(getResult("mean_foreground_dice", last), 4) + ", mean IoU " + d2s(getResult("mean_iou", last), 4));
if (results != "")
	Table.save(results);
