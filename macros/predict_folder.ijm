// deepseg: segment every image in a folder and save the label images.
//
// Arguments (getArgument(), key=value, [brackets] around values with spaces):
//   input=<folder of images>  output=<folder for label images>  model=<model folder>
//   tile=<tile size, 0 = model default>  overlap=<0..0.9, default 0.25>  tta (flag: test-time augmentation)
// Run:  deepseg macro macros/predict_folder.ijm --args input=/data/images output=/data/labels model=/models/nuclei
// In Fiji: Plugins > Macros > Run..., or run("Run...", "path=...") with the arguments in a macro.

args = getArgument();
input = call("ij.Macro.getValue", args, "input", "");
output = call("ij.Macro.getValue", args, "output", "");
model = call("ij.Macro.getValue", args, "model", "");
tile = call("ij.Macro.getValue", args, "tile", "0");
overlap = call("ij.Macro.getValue", args, "overlap", "0.25");
tta = "";
if (matches(" " + args + " ", ".* tta .*"))
	tta = " tta";
if (input == "" || output == "" || model == "")
	exit("predict_folder.ijm needs input=<folder> output=<folder> model=<model folder>; got: " + args);
if (!File.isDirectory(input))
	exit("input folder not found: " + input);
if (!endsWith(input, File.separator)) input = input + File.separator;
if (!endsWith(output, File.separator)) output = output + File.separator;
files = getFileList(input);
// Never write over an input: refuse, before writing anything, an output folder that is the input
// folder (also spelled differently or through a link) and any label file that would replace an image.
if (sameFolder(input, output))
	exit("output folder " + output + " is the input folder " + input + ": choose another output folder (the label images would replace the images)");
for (i = 0; i < files.length; i++) {
	target = output + File.getNameWithoutExtension(files[i]) + ".tif";
	if (isImage(files[i]) && File.exists(target) && sameFile(input + files[i], target))
		exit("output file " + target + " is the input image " + input + files[i] + ": choose another output folder");
}
File.makeDirectory(output);

setBatchMode(true);
done = 0;
for (i = 0; i < files.length; i++) {
	name = files[i];
	if (!isImage(name))
		continue;
	open(input + name);
	source = getTitle();
	stem = File.nameWithoutExtension;
	run("DeepSeg Predict...", "model=[" + model + "] image=[" + source + "] tile=" + tile + " overlap=" + overlap + " output=labels" + tta);
	saveAs("Tiff", output + stem + ".tif");
	close("*");
	done++;
	showProgress(i + 1, files.length);
}
print("deepseg: " + done + " label image(s) written to " + output);

// (ImageJ's `return` takes only the first operand of a boolean expression: hence the if statements.)
function isImage(name) {
	lower = toLowerCase(name);
	if (endsWith(lower, ".tif") || endsWith(lower, ".tiff") || endsWith(lower, ".png"))
		return true;
	return false;
}

// Whether two existing paths name one file: same size and same modification time to the millisecond
// (the macro language cannot resolve links; hard and symbolic links share both).
function sameFile(a, b) {
	if (File.length(a) == File.length(b) && File.lastModified(a) == File.lastModified(b))
		return true;
	return false;
}

// Whether folders a and b (both ending with a separator) are one folder: the same path, or an existing
// b with the same time stamp and the same, non-empty listing of the same files.
function sameFolder(a, b) {
	if (a == b)
		return true;
	if (!File.isDirectory(b) || File.lastModified(a) != File.lastModified(b))
		return false;
	la = getFileList(a);
	lb = getFileList(b);
	if (la.length == 0 || la.length != lb.length)
		return false;
	for (k = 0; k < la.length; k++) {
		if (la[k] != lb[k] || !sameFile(a + la[k], b + lb[k]))
			return false;
	}
	return true;
}
