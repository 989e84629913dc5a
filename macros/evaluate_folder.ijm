// deepseg: compare a folder of predicted label images with a folder of ground truth.
//
// Arguments (getArgument(), key=value, [brackets] around values with spaces):
//   prediction=<folder of predicted label images>  truth=<folder of ground-truth label images>
//   (files are paired by name, extension ignored)
//   optional: results=<CSV file for the per-image table>  classes=auto (auto = largest label + 1)
//             ignore=-1 (truth label to leave out, -1 = none)  names=[background,nucleus]
// Run:  deepseg macro macros/evaluate_folder.ijm --args prediction=/data/labels truth=/data/truth results=/data/metrics.csv

args = getArgument();
prediction = call("ij.Macro.getValue", args, "prediction", "");
truth = call("ij.Macro.getValue", args, "truth", "");
results = call("ij.Macro.getValue", args, "results", "");
classes = call("ij.Macro.getValue", args, "classes", "auto");
ignore = call("ij.Macro.getValue", args, "ignore", "-1");
names = call("ij.Macro.getValue", args, "names", "");
if (prediction == "" || truth == "")
	exit("evaluate_folder.ijm needs prediction=<folder> truth=<folder>; got: " + args);
// Never write over an input: refuse, before anything runs, a results file that is an input image.
if (results != "") {
	if (File.isDirectory(results))
		exit("results=" + results + " is a folder: give a CSV file name");
	refuseInput(results, prediction, "prediction");
	refuseInput(results, truth, "truth");
}

run("DeepSeg Evaluate...", "prediction=[" + prediction + "] truth=[" + truth + "] classes=" + classes + " ignore=" + ignore + " names=[" + names + "]");
// One row per image, and a last row "all" (every voxel of every image together).
last = nResults - 1;
print("deepseg: " + getResultString("image", last) + ": mean foreground Dice " + d2s(getResult("mean_foreground_dice", last), 4) + ", mean IoU " + d2s(getResult("mean_iou", last), 4));
if (results != "")
	Table.save(results);

// exit() when file would replace the input given as what= (a file, or an image in that folder).
function refuseInput(file, input, what) {
	if (!File.isDirectory(input)) {
		if (file == input || (File.exists(file) && File.exists(input) && sameFile(file, input)))
			exit("results file " + file + " is the " + what + " " + input + ": choose another results file");
		return;
	}
	if (!endsWith(input, File.separator)) input = input + File.separator;
	name = File.getName(file);
	lower = toLowerCase(name);
	isImage = endsWith(lower, ".tif") || endsWith(lower, ".tiff") || endsWith(lower, ".png");
	if (isImage && File.exists(file) && File.exists(input + name) && sameFile(file, input + name))
		exit("results file " + file + " is the " + what + " image " + input + name + ": choose another results file");
}

// Whether two existing paths name one file: same size and same modification time to the millisecond
// (the macro language cannot resolve links; hard and symbolic links share both).
// (ImageJ's `return` takes only the first operand of a boolean expression: hence the if statement.)
function sameFile(a, b) {
	if (File.length(a) == File.length(b) && File.lastModified(a) == File.lastModified(b))
		return true;
	return false;
}
