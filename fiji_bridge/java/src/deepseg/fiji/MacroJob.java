package deepseg.fiji;

import ij.IJ;
import ij.Macro;
import ij.macro.DeepSegInterpreter;
import ij.macro.Interpreter;

import java.io.PrintStream;

/**
 * Runs one macro on its own thread, the way ImageJ runs macros (thread name ending in "Macro$", so
 * {@code IJ.error} aborts it), and records how it ended: its return value, or the first error.
 */
public class MacroJob implements Runnable {

    private final String code;
    private final String argument;
    private final boolean batchMode;
    private final DeepSegInterpreter interpreter = new DeepSegInterpreter();
    private Thread thread;

    private volatile boolean finished;
    private volatile boolean aborted;
    private volatile String returnValue;
    private volatile String error;
    private volatile Throwable crash;

    public MacroJob(String code, String argument, boolean batchMode) {
        this.code = code;
        this.argument = argument == null ? "" : argument;
        this.batchMode = batchMode;
    }

    /** Starts the macro on a new thread. */
    public void start() {
        thread = new Thread(this, "Run$_deepseg_Macro$");
        thread.setDaemon(true); // a macro still running (after Ctrl-C) must not keep the JVM alive at exit
        thread.start();
    }

    /** Waits up to {@code millis} ms; returns true once the macro has ended. */
    public boolean join(long millis) throws InterruptedException {
        thread.join(millis);
        return !thread.isAlive();
    }

    /** Asks the macro to stop (as Esc does) and interrupts its thread. */
    public void abort() {
        interpreter.abortMacro();
        if (thread != null)
            thread.interrupt();
    }

    public boolean isFinished() { return finished; }
    /** True if the macro stopped early: exit(), an abort, or an error. */
    public boolean wasAborted() { return aborted; }
    /** The macro's return value (or null). */
    public String getReturnValue() { return returnValue; }
    /** The first error ("message in line N ..."), the message of exit("message"), or null. */
    public String getError() { return error; }
    /** An unexpected Java exception that ended the macro, or null. */
    public Throwable getCrash() { return crash; }

    @Override
    public void run() {
        PrintStream out = System.out;
        MessageCatcher catcher = new MessageCatcher(out);
        System.setOut(catcher);
        IJ.getErrorMessage(); // forget errors of earlier commands
        try {
            if (batchMode)
                DeepSegInterpreter.useBatchMode(true);
            returnValue = interpreter.run(code, argument);
        } catch (RuntimeException e) {
            if (Macro.MACRO_CANCELED.equals(e.getMessage()))
                aborted = true;
            else
                crash = e;
        } catch (Throwable t) {
            crash = t;
        } finally {
            System.setOut(out);
            String failure = interpreter.getFailure();
            String ijError = IJ.getErrorMessage();
            if (failure != null)
                error = failure;
            else if (aborted && ijError != null)
                error = ijError;
            else if (aborted && catcher.exitMessage != null)
                error = catcher.exitMessage;
            if (error != null)
                aborted = true;
            finished = true;
        }
    }

    /** Passes everything through, noting the message of exit("message"), which ImageJ prints when it has no window. */
    static final class MessageCatcher extends PrintStream {
        volatile String exitMessage;

        MessageCatcher(PrintStream out) {
            super(out, true);
        }

        @Override
        public void println(String line) {
            if (Thread.currentThread().getName().endsWith("Macro$")) {
                for (StackTraceElement frame : new Throwable().getStackTrace()) {
                    if (frame.getClassName().equals("ij.macro.Functions") && frame.getMethodName().equals("exit")) {
                        exitMessage = line;
                        break;
                    }
                }
            }
            super.println(line);
        }
    }
}
